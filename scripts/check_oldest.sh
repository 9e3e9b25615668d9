#!/usr/bin/env bash
# The oldest versions pyproject.toml allows, tested: a fresh venv with torch and torchvision at
# their upper bound (the only torch here) and every other dependency pinned to its floor (its
# `>=X` becomes `==X`; the ones without a floor, numpy and pillow, are left to pip), lenet-cli
# installed over it with --no-deps, then the core tests: config composition, training end to end,
# checkpoint/resume, eval, the HParams row, pictures, sweeps and their summary, DDP on the CPU.
#
#   scripts/check_oldest.sh [VENV_DIR] [PYTEST_ARGS...]     (make test-oldest)
#
# VENV_DIR (default .venv-oldest, git-ignored) is removed and built anew each time (~1.5 min);
# PYTEST_ARGS, when given, replace the core test files. Exits non-zero if anything fails.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="${1:-.venv-oldest}"
shift || true
CORE_TESTS=(
  tests/test_config.py tests/test_data.py tests/test_train.py tests/test_reliability.py
  tests/test_evaluate.py tests/test_pictures.py tests/test_sweeps.py tests/test_distributed.py
  tests/test_long_sweeps.py
)
[ "$#" -gt 0 ] && CORE_TESTS=("$@")

export PIP_DISABLE_PIP_VERSION_CHECK=1
pip_quiet() {  # this machine's pip config names local indexes; skip its "ignored location" lines
  "$VENV/bin/pip" install --quiet "$@" 2>&1 | { grep -v "^WARNING: Location '" || true; }
}

start=$SECONDS
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"

# torch/torchvision at their `<=` bound, every other dependency at its `>=` floor.
mapfile -t PINS < <("$VENV/bin/python" - <<'EOF'
import re
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
with open("pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for dep in deps:
    name, spec = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(.*)", dep).groups()
    bound = re.search(r"<=\s*([^,;\s]+)" if name in ("torch", "torchvision") else r">=\s*([^,;\s]+)", spec)
    print(f"{name}=={bound.group(1)}" if bound else name)
EOF
)
echo "check_oldest: installing ${PINS[*]}"
pip_quiet "${PINS[@]}" pytest pytest-xdist
pip_quiet --no-deps -e .
"$VENV/bin/pip" check
"$VENV/bin/pip" list --format=freeze 2>/dev/null | grep -iE \
  '^(torch|torchvision|pytorch-lightning|torchmetrics|hydra-[a-z-]+|omegaconf|rich|tensorboard|matplotlib|numpy|protobuf|optuna)==' \
  | tr '\n' ' '
echo
echo "check_oldest: venv ready in $((SECONDS - start)) s; running ${CORE_TESTS[*]}"

# The venv's own python: tests/conftest.py runs the commands from sys.executable's folder.
OMP_NUM_THREADS=1 "$VENV/bin/python" -m pytest -q -n "${TEST_WORKERS:-2}" "${CORE_TESTS[@]}"
echo "check_oldest: passed in $((SECONDS - start)) s"
