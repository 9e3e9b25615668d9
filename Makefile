# Two commands are all you need: `make train` and `make test` (each installs first if needed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install train test test-slow lint format tensorboard clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install lenet-cli with its dev tools (idempotent)

train: $(STAMP)  ## train the default LeNet-5 and test it; pass overrides with ARGS="model=modern ..."
	$(BIN)/lenet-train $(ARGS)

# Two pytest workers of one torch thread each keep both cores busy while the other waits on a
# subprocess (most end-to-end tests start the real command); TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 $(BIN)/pytest -q -n $(TEST_WORKERS)
# The slower suites: the tests on the local SLURM cluster and the multi-process runs.
SLOW := slurm or slow

test: $(STAMP)  ## every test but the slower suites (the real-MNIST ones when LENET_DATA_DIR is set)
	$(PYTEST) -m "not ($(SLOW))" $(ARGS)

test-slow: $(STAMP)  ## the slower suites (marked slurm or slow); CI runs them after make test
	$(PYTEST) -m "$(SLOW)" $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check lenet_cli tests scripts
	$(BIN)/ruff format --check lenet_cli tests scripts

format: $(STAMP)
	$(BIN)/ruff format lenet_cli tests scripts
	$(BIN)/ruff check --fix lenet_cli tests scripts

tensorboard: $(STAMP)  ## open the dashboards of every run under outputs/
	$(BIN)/tensorboard --logdir outputs

clean:  ## remove the virtual environment and caches (keeps outputs/ and data/)
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: test-oldest
test-oldest:  ## the core tests against the oldest dependency versions pyproject.toml allows (own venv)
	PYTHON=$(PYTHON) scripts/check_oldest.sh .venv-oldest $(ARGS)
