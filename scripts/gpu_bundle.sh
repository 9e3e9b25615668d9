#!/usr/bin/env bash
# Fill gpu_bundle/ (git-ignored) with what scripts/gpu_check.sh needs on a GPU machine that
# reaches no package registry (docs/gpu.md). Run it here, right before the device call:
#
#   LENET_DATA_DIR=../shared/data scripts/gpu_bundle.sh
#
#   gpu_bundle/wheels/          lenet-cli's requirements that the device's Python 3.12 lacks (it has
#                               torch, Lightning, torchmetrics, tensorboard, rich, matplotlib...),
#                               at the versions of .venv, for x86-64 Linux
#   gpu_bundle/lenet_cli-*.whl  lenet-cli built from this tree
#   gpu_bundle/SOURCES          the hash of that tree: gpu_check.sh refuses a bundle of other sources
#   gpu_bundle/data/MNIST/raw/  the four MNIST files, gzipped (about 11 MB)
#
# `scripts/gpu_bundle.sh --hash` prints the hash of the tree as it is now.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUNDLE="${GPU_BUNDLE:-$ROOT/gpu_bundle}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
DATA="${LENET_DATA_DIR:-$ROOT/data}/MNIST/raw"
# What the device lacks: Hydra, its launchers (submitit's is imported by ours, lenet_cli_slurm),
# Optuna and their own requirements (and antlr4-python3-runtime, below); typing-extensions for
# alembic's floor (>= 4.12).
WHEELS="hydra-core omegaconf hydra-joblib-launcher hydra-submitit-launcher submitit optuna alembic
    sqlalchemy colorlog mako typing-extensions"

source_hash() {  # of what goes into the lenet-cli wheel, in the tree at $1
    (cd "$1" && find pyproject.toml lenet_cli conf hydra_plugins -type f \
        \( -name '*.py' -o -name '*.yaml' -o -name '*.toml' \) ! -path '*/__pycache__/*' |
        LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
}
if [ "${1:-}" = --hash ]; then source_hash "$ROOT"; exit; fi

rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/wheels" "$BUNDLE/data/MNIST/raw"
PIP=("$PYTHON" -m pip --disable-pip-version-check -q)
version() { "$PYTHON" -c "import importlib.metadata as m; print(m.version('$1'))"; }
# antlr4-python3-runtime 4.9.3 is published as a source archive only: built here (pure Python).
"${PIP[@]}" wheel --no-deps -w "$BUNDLE/wheels" "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
pins=()
for name in $WHEELS; do pins+=("$name==$(version "$name")"); done
"${PIP[@]}" download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 -d "$BUNDLE/wheels" "${pins[@]}"

# lenet-cli from a copy of the tree, so that no build/ or egg-info lands in the repository.
SRC="$(mktemp -d -t lenet_src.XXXXXX)"
trap 'rm -rf "$SRC"' EXIT
tar -C "$ROOT" --exclude=__pycache__ -cf - pyproject.toml README.md lenet_cli conf hydra_plugins |
    tar -C "$SRC" -xf -
source_hash "$SRC" >"$SRC/SOURCES"
"${PIP[@]}" wheel --no-deps -w "$BUNDLE" "$SRC" >"$SRC/build.log" 2>&1 || { cat "$SRC/build.log"; exit 1; }

for name in {train,t10k}-{images-idx3,labels-idx1}-ubyte; do
    [ -f "$DATA/$name" ] || { echo "no $DATA/$name: set LENET_DATA_DIR" >&2; exit 1; }
    gzip -c "$DATA/$name" >"$BUNDLE/data/MNIST/raw/$name.gz"
done
cp "$SRC/SOURCES" "$BUNDLE/SOURCES"  # last: a bundle cut short has none, and is refused
ls "$BUNDLE"/wheels "$BUNDLE"
echo "gpu_bundle: $(du -sh "$BUNDLE" | cut -f1) for sources $(cat "$BUNDLE/SOURCES") (carry \"gpu_bundle\")"
