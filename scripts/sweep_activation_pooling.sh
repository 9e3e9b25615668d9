#!/usr/bin/env bash
# Activation x pooling grid on the modern LeNet-5: 4 activations x 3 poolings = 12 jobs, one
# sweep folder, summary.csv/summary.md best first. Extra arguments are passed to lenet-train:
#   scripts/sweep_activation_pooling.sh trainer.max_epochs=3 hydra/launcher=joblib
set -euo pipefail
# lenet-train from PATH, else from the repository's .venv (runs land under the current folder).
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LENET_TRAIN="${LENET_TRAIN:-$(command -v lenet-train || echo "$ROOT/.venv/bin/lenet-train")}"
exec "$LENET_TRAIN" -m model=modern \
  model.activation=relu,tanh,scaled_tanh,gelu \
  model.pooling=max,avg,trainable \
  "$@"
