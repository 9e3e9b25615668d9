#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, in under 5 minutes, the headline GPU paths of
# lenet-cli end to end, as one markdown table; exit code 1 if any check failed.
#
#   1. environment   nvidia-smi, torch.cuda (bf16 support), the versions in use
#   2. fast bf16     lenet-train trainer=gpu experiment=fast: test/acc >= 0.99; fit seconds,
#                    samples/s, peak CUDA memory; the three splits on the GPU and every batch
#                    handed over already there (no host-to-device copy of images per step);
#                    the first convolution computing in bfloat16
#   3. compile       ... model.compile=true model.channels_last=true trainer.max_epochs=1
#   4. 16-mixed      ... trainer.precision=16-mixed trainer.max_epochs=1 (float16 convolutions)
#   5. ddp           lenet-train trainer=ddp (every visible GPU) experiment=fast
#                    trainer.max_epochs=1: one run folder, DDP over all GPUs
#   6. lenet-eval    the fast run's best.ckpt on the GPU (32-bit): accuracy within 0.5 points
#   7. lenet-export  the same checkpoint --format onnx (checked with onnxruntime by the command)
#
# On a machine without a registry: run scripts/gpu_bundle.sh here first (it fills gpu_bundle/,
# git-ignored, about 12 MB), bring gpu_bundle/ along with the repository, then there:
#
#   scripts/gpu_check.sh                 # the table also goes to $OUT/gpu_check.md if OUT is set
#   scripts/gpu_check.sh --dry-run       # the plumbing on the CPU (no GPU assertions)
#
# It installs gpu_bundle/wheels/*.whl and lenet-cli (built from this tree, else the bundled
# wheel) with pip --no-index --no-deps --target into a temporary folder put first on PYTHONPATH,
# so the machine's own torch, Lightning, onnx... are used and nothing is installed for good.
# Runs, caches and the unpacked MNIST live in that folder too, removed at the end
# (GPU_CHECK_KEEP=1 keeps it). Nothing else is written outside the repository.
# Settings: GPU_CHECK_PYTHON (default python3), GPU_BUNDLE (default ./gpu_bundle),
# LENET_DATA_DIR (used when the bundle has no data), --budget SECONDS (default 270; 900 dry).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${GPU_CHECK_PYTHON:-python3}"
BUNDLE="${GPU_BUNDLE:-$ROOT/gpu_bundle}"
START=$SECONDS
WORK="$(mktemp -d -t gpu_check.XXXXXX)"
if [ "${GPU_CHECK_KEEP:-0}" = 1 ]; then
    echo "gpu_check: work folder $WORK (kept)"
else
    trap 'rm -rf "$WORK"' EXIT
fi
SITE="$WORK/site"
PYTHON="$(command -v "$PYTHON")"

# -- 1. the bundle's wheels and lenet-cli, into $SITE ----------------------------------------------
wheels=("$BUNDLE"/wheels/*.whl)
[ -e "${wheels[0]}" ] || wheels=()
export PIP_ROOT_USER_ACTION=ignore  # (an environment variable: older pips ignore it)
PIP=("$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile
    --no-cache-dir --target "$SITE")
mkdir -p "$WORK/src"  # a copy of the tree: the build writes nothing into the repository
tar -C "$ROOT" --exclude=__pycache__ -cf - pyproject.toml README.md lenet_cli conf hydra_plugins | tar -C "$WORK/src" -xf -
if "${PIP[@]}" --no-build-isolation "${wheels[@]}" "$WORK/src" >"$WORK/pip.log" 2>&1; then
    installed="the working tree"
else
    tail -5 "$WORK/pip.log"
    fallback=("$BUNDLE"/lenet_cli/lenet_cli-*.whl)
    if [ ! -e "${fallback[0]}" ]; then
        echo "gpu_check: cannot build lenet-cli from the tree here (above) and there is no" \
            "$BUNDLE/lenet_cli/*.whl: run scripts/gpu_bundle.sh on a machine with pip access" >&2
        exit 2
    fi
    echo "gpu_check: building lenet-cli from the tree failed; installing ${fallback[0]} instead"
    rm -rf "$SITE"
    "${PIP[@]}" "${wheels[@]}" "${fallback[@]}"
    installed="the bundled wheel ${fallback[0]##*/} (the tree as gpu_bundle.sh saw it)"
fi
echo "gpu_check: installed ${#wheels[@]} bundle wheel(s) and lenet-cli from $installed ($((SECONDS - START)) s)"

# -- 2. MNIST: the bundle's .gz files unpacked, else $LENET_DATA_DIR ---------------------------------
RAW="$WORK/data/MNIST/raw"
mkdir -p "$RAW"
for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    if [ -f "$BUNDLE/data/MNIST/raw/$name.gz" ]; then
        gunzip -c "$BUNDLE/data/MNIST/raw/$name.gz" >"$RAW/$name"
    elif [ -n "${LENET_DATA_DIR:-}" ] && [ -f "$LENET_DATA_DIR/MNIST/raw/$name" ]; then
        ln -s "$(cd "$LENET_DATA_DIR/MNIST/raw" && pwd)/$name" "$RAW/$name"
    else
        echo "gpu_check: no $name(.gz) in $BUNDLE/data/MNIST/raw/ or \$LENET_DATA_DIR/MNIST/raw/" >&2
        echo "           (run scripts/gpu_bundle.sh where the data is)" >&2
        exit 2
    fi
done

# -- 3. the checks ------------------------------------------------------------------------------------
export PATH="$SITE/bin:$PATH"
export PYTHONPATH="$SITE:$ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}"
export LENET_DATA_DIR="$WORK/data"
export PYTHONUNBUFFERED=1 GPU_CHECK_INSTALLED="lenet-cli from $installed"
# Compiler caches and matplotlib's config in the work folder, not in /tmp or $HOME.
export TORCHINDUCTOR_CACHE_DIR="$WORK/cache/inductor" TRITON_CACHE_DIR="$WORK/cache/triton"
export MPLCONFIGDIR="$WORK/cache/matplotlib"
unset LENET_RUN_DIR LENET_SWEEP_DIR
set +e
"$PYTHON" "$ROOT/scripts/gpu_check.py" --work "$WORK" "$@"
code=$?
echo "gpu_check: exit code $code after $((SECONDS - START)) s"
exit $code
