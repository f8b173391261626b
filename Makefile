# Two commands set up everything on a fresh Debian machine (Python 3.11):
#   make train   -> venv + deps + Fashion-MNIST, then trains the default model
#   make test    -> venv + deps + Fashion-MNIST, then lints (ruff, compileall) and runs the test suite
# A second run installs nothing: the venv is keyed on a stamp of the requirement files.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.jaxssl-installed
WORKDIR ?= workdirs/simclr_fmnist
CONFIG  ?= experiments/configs/simclr.py
PYTEST_ARGS ?=
TRAIN_ARGS ?=

LINT_DIRS := jaxssl experiments benchmarks tests

.PHONY: setup dataset lint train test test-all bench clean

setup: $(STAMP) dataset

$(STAMP): requirements.txt requirements-dev.txt setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

dataset:
	@bash scripts/ensure_fashion_mnist.sh

# A second `make train` continues (or just re-evaluates) the run in $(WORKDIR).
train: setup
	$(VENV)/bin/jaxssl train --config $(CONFIG) --workdir $(WORKDIR) \
	  $$(ls $(WORKDIR)/checkpoints 2>/dev/null | grep -qx "[0-9]*" && echo --resume) $(TRAIN_ARGS)

# The gate before the tests: pyflakes and syntax errors (rules in pyproject.toml [tool.ruff]),
# and every file byte-compiles (a script nothing imports still fails here).
lint: setup
	$(VENV)/bin/ruff check $(LINT_DIRS)
	$(PY) -m compileall -q $(LINT_DIRS)

test: lint
	$(PY) -m pytest -n 2 -q $(PYTEST_ARGS)

test-all: lint
	$(PY) -m pytest -n 2 -q -m "" $(PYTEST_ARGS)

bench: setup
	$(PY) -m pip install -q torch==2.13.0
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) workdirs .pytest_cache
