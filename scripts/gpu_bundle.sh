#!/usr/bin/env bash
# Prepare gpu_bundle/ (git-ignored) for scripts/gpu_check.sh on a GPU machine that reaches no
# package registry. Run it here, where pip reaches PyPI and MNIST is on disk:
#
#   LENET_DATA_DIR=../shared/data scripts/gpu_bundle.sh
#
# It writes (about 11 MB in all):
#   gpu_bundle/wheels/        what lenet-cli needs beyond a Python 3.12 with torch, Lightning,
#                             torchmetrics, torchvision, tensorboard, rich, matplotlib, numpy,
#                             pillow, PyYAML, onnx, onnxscript and onnxruntime: hydra-core,
#                             omegaconf, antlr4-python3-runtime (pure Python, any platform)
#   gpu_bundle/lenet_cli/     lenet-cli built as a wheel from this tree: gpu_check.sh installs the
#                             tree as it is then, and falls back to this wheel only if it cannot
#                             build there
#   gpu_bundle/data/MNIST/raw/*.gz   the four MNIST idx files, gzipped
#
# The sweep dependencies of pyproject.toml (optuna, the joblib and submitit launchers) are left
# out: only multiruns use them, and Hydra finds no plugin it does not need at start.
# Versions: those of the repository's .venv when it is installed, else the pins below.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUNDLE="${GPU_BUNDLE:-$ROOT/gpu_bundle}"
PY_VERSION="${GPU_PY_VERSION:-3.12}"  # the GPU machine's Python
PYTHON="${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3)}"
DATA="${LENET_DATA_DIR:-$ROOT/data}/MNIST/raw"

installed_version() {  # the version in $PYTHON's environment, or the fallback pin
    "$PYTHON" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || echo "$2"
}
HYDRA="$(installed_version hydra-core 1.3.2)"
OMEGACONF="$(installed_version omegaconf 2.3.0)"
ANTLR="$(installed_version antlr4-python3-runtime 4.9.3)"

rm -rf "$BUNDLE/wheels" "$BUNDLE/lenet_cli" "$BUNDLE/data"
mkdir -p "$BUNDLE/wheels" "$BUNDLE/lenet_cli" "$BUNDLE/data/MNIST/raw"
PIP=("$PYTHON" -m pip --disable-pip-version-check -q)

echo "wheels for Python $PY_VERSION: hydra-core==$HYDRA omegaconf==$OMEGACONF antlr4-python3-runtime==$ANTLR"
"${PIP[@]}" download --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    -d "$BUNDLE/wheels" "hydra-core==$HYDRA" "omegaconf==$OMEGACONF"
# antlr4-python3-runtime 4.9.3 is published as a source archive only: build its (pure Python,
# py3-none-any) wheel here.
"${PIP[@]}" download --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    -d "$BUNDLE/wheels" "antlr4-python3-runtime==$ANTLR" 2>/dev/null ||
    "${PIP[@]}" wheel --no-deps -w "$BUNDLE/wheels" "antlr4-python3-runtime==$ANTLR"
for wheel in "$BUNDLE"/wheels/*.whl; do
    case "$(basename "$wheel")" in
        *-py3-none-any.whl | *-py2.py3-none-any.whl) ;;
        *) echo "not a pure-Python wheel: $wheel" >&2; exit 1 ;;
    esac
done

# lenet-cli from a copy of the tree, so that no build/ or egg-info lands in the repository.
SRC="$(mktemp -d -t lenet_src.XXXXXX)"
trap 'rm -rf "$SRC"' EXIT
mkdir "$SRC/tree"
tar -C "$ROOT" --exclude=__pycache__ -cf - pyproject.toml README.md lenet_cli conf hydra_plugins | tar -C "$SRC/tree" -xf -
"${PIP[@]}" wheel --no-deps -w "$BUNDLE/lenet_cli" "$SRC/tree" >"$SRC/build.log" 2>&1 ||
    { cat "$SRC/build.log" >&2; exit 1; }

for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    if [ -f "$DATA/$name" ]; then
        gzip -9 -c "$DATA/$name" >"$BUNDLE/data/MNIST/raw/$name.gz"
    elif [ -f "$DATA/$name.gz" ]; then
        cp "$DATA/$name.gz" "$BUNDLE/data/MNIST/raw/"
    else
        echo "missing $DATA/$name: set LENET_DATA_DIR to the folder that holds MNIST/raw/" >&2
        exit 1
    fi
done

(cd "$BUNDLE" && ls -l wheels lenet_cli data/MNIST/raw)
echo "gpu_bundle: $(du -sh "$BUNDLE" | cut -f1) in $BUNDLE (carry it: \"gpu_bundle\")"
