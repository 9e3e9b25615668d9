#!/usr/bin/env bash
# Optimiser comparison: SGD (Nesterov momentum), Adam and AdamW, each at its own default learning
# rate, with and without the one-cycle schedule. 6 jobs.
#   scripts/sweep_optimizers.sh trainer.max_epochs=3
set -euo pipefail
# lenet-train from PATH, else from the repository's .venv (runs land under the current folder).
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LENET_TRAIN="${LENET_TRAIN:-$(command -v lenet-train || echo "$ROOT/.venv/bin/lenet-train")}"
exec "$LENET_TRAIN" -m model=modern \
  optimizer=sgd,adam,adamw scheduler=onecycle,none \
  "$@"
