#!/usr/bin/env bash
# Kernel-size study: 3x3, 5x5 (the published size), 7x7 and 9x9 convolutions in the modern
# LeNet-5, without padding, so larger kernels shrink the feature maps faster (9x9 leaves C3 a 4x4
# map; 11x11 would not fit). 4 jobs. Add model.padding=same to keep the maps' size instead:
#   scripts/sweep_kernel_size.sh trainer.max_epochs=3 model.padding=same
set -euo pipefail
# lenet-train from PATH, else from the repository's .venv (runs land under the current folder).
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LENET_TRAIN="${LENET_TRAIN:-$(command -v lenet-train || echo "$ROOT/.venv/bin/lenet-train")}"
exec "$LENET_TRAIN" -m model=modern model.kernel_size=3,5,7,9 "$@"
