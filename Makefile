# Set-up is part of every target: `make demo` and `make test` create or update
# .venv (Python and make are all a fresh machine needs).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: venv test test-fast test-fast-backends test-quick lint demo fashion-mnist bazel-query bazel-test bench bench-quick clean

$(STAMP): setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,examples,hub,litert,jax,torch]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The whole suite on TensorFlow, then the backend-neutral core suite
# (tests/core) on JAX and PyTorch.
CORE := tests/core

test: lint
	$(BIN)/python -m pytest -q
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q $(CORE)
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q $(CORE)

# The edit-test loop (under 2 minutes on 2 cores): the unit tests on
# TensorFlow, without the whole-model tests (`integration`) and the cases
# marked `slow`. `make test-fast-backends` runs the core suite's unit tests
# on JAX and PyTorch (about 35 s more). `make test` runs all.
FAST := -m "not slow and not integration"

test-fast: lint
	$(BIN)/python -m pytest -q $(FAST)

test-fast-backends: $(STAMP)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q $(FAST) $(CORE)
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q $(FAST) $(CORE)

test-quick: test-fast

# Offline machines get Fashion-MNIST from Debian's package when apt is usable;
# otherwise the demo downloads it through keras.datasets.
fashion-mnist:
	@if [ ! -f $(FASHION_MNIST) ] && command -v apt-get >/dev/null 2>&1 \
	    && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist \
	    || echo "apt-get could not install dataset-fashion-mnist"; \
	fi

demo: $(STAMP) fashion-mnist
	$(BIN)/python examples/fashion_mnist_demo.py --mode=quick

bazel-query:
	bazel query //...

# Every target, offline: the test files again (one py_test each), examples
# and benchmarks as binaries. Bazel 4 runs the first python3 on PATH.
bazel-test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bazel test //...

# Issue 4's ratios against dense training (see README, "Speed and memory").
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --quick

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .hypothesis
