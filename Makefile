# Two entry points, both from a fresh clone: `make demo` and `make test`; `make check` is the edit-test loop.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test check lint

$(BIN)/catneuron: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel first: a plain `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/catneuron

demo: setup
	$(BIN)/catneuron demo

# Two pytest workers, a test file each at a time (its module fixtures, a Ray cluster among them, start once):
# most of the suite's time is spent waiting on spawned processes, so two workers on two cores halve it.
PYTEST := $(BIN)/pytest -n 2 --dist loadfile

# The full suite, as CI runs it: lint, the package layers, the types, every test.
test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(PYTEST) --durations=15

# The fast tier (under 2 minutes on 2 cores): lint and the tests not marked slow.
check: setup
	$(BIN)/ruff check .
	$(PYTEST) -m "not slow"

lint: setup
	$(BIN)/ruff check .
