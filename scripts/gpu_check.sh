#!/usr/bin/env bash
# The GPU check (docs/gpu.md says what each row shows): lenet-cli's GPU paths end to end, in
# under 8 minutes, on a machine with a CUDA GPU and no package registry. Here, first:
#
#   LENET_DATA_DIR=../shared/data scripts/gpu_bundle.sh   # fills gpu_bundle/ (carry it along)
#
# then there, in the repository:
#
#   scripts/gpu_check.sh                   # every row; the table, as each row ends, in $OUT
#   scripts/gpu_check.sh --rows compile    # some rows again (environment always runs)
#   scripts/gpu_check.sh --dry-run         # here: the same rows on the CPU, no GPU assertion
#
# It stops within seconds when the bundle is missing, incomplete or built from other sources than
# this tree. The bundle's wheels and lenet-cli go into a temporary folder put first on
# PYTHONPATH (the machine's own torch and Lightning are used); runs, caches and the unpacked data
# live there too, removed at the end. The table and the commands' output go to $OUT, else to
# outputs/gpu_check/. Settings: GPU_CHECK_PYTHON (python3; the dry run: .venv/bin/python),
# GPU_BUNDLE (gpu_bundle/).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUNDLE="${GPU_BUNDLE:-$ROOT/gpu_bundle}"
DRY=0
case " $* " in *" --dry-run "*) DRY=1 ;; esac
PYTHON="${GPU_CHECK_PYTHON:-$([ $DRY = 1 ] && echo "$ROOT/.venv/bin/python" || echo python3)}"
START=$SECONDS
stop() { echo "gpu_check: $*" >&2; exit 2; }

# -- the bundle: complete, and built from this tree --------------------------------------------
again="run LENET_DATA_DIR=../shared/data scripts/gpu_bundle.sh here, then carry gpu_bundle"
[ -f "$BUNDLE/SOURCES" ] || stop "no complete bundle in $BUNDLE: $again"
[ "$(cat "$BUNDLE/SOURCES")" = "$(bash "$ROOT/scripts/gpu_bundle.sh" --hash)" ] ||
    stop "$BUNDLE was built from other sources than this tree: $again"
wheels=("$BUNDLE"/wheels/*.whl "$BUNDLE"/lenet_cli-*.whl)
for file in "${wheels[@]}" "$BUNDLE"/data/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz; do
    [ -f "$file" ] || stop "missing $file: $again"
done

# -- install (for Python 3.12 on x86-64 Linux, the device's, also in the dry run) and unpack ----
WORK="$(mktemp -d -t gpu_check.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
    --no-cache-dir --target "$WORK/site" --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 "${wheels[@]}" || stop "pip could not install the bundle"
mkdir -p "$WORK/data/MNIST/raw"
for file in "$BUNDLE"/data/MNIST/raw/*.gz; do
    gunzip -c "$file" >"$WORK/data/MNIST/raw/$(basename "$file" .gz)"
done
echo "gpu_check: bundle $(cat "$BUNDLE/SOURCES") installed and unpacked in $((SECONDS - START)) s"

# -- the rows --------------------------------------------------------------------------------------
export PATH="$WORK/site/bin:$PATH" PYTHONPATH="$WORK/site:$ROOT/scripts"
export LENET_DATA_DIR="$WORK/data" PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR="$WORK/cache/triton" MPLCONFIGDIR="$WORK/cache/matplotlib"
unset LENET_RUN_DIR LENET_SWEEP_DIR
code=0
"$PYTHON" "$ROOT/scripts/gpu_check.py" --work "$WORK" --out "${OUT:-$ROOT/outputs/gpu_check}" "$@" ||
    code=$?
echo "gpu_check: exit code $code after $((SECONDS - START)) s"
exit $code
