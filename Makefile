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

# The full suite, as CI runs it: lint, the package layers, the types, every test.
test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest

# The fast tier (under 2 minutes on 2 cores): lint and the tests not marked slow.
check: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -m "not slow"

lint: setup
	$(BIN)/ruff check .
