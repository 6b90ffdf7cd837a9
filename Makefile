# `make test` and `make run` bootstrap .venv themselves: a fresh clone needs only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test soak run bench typecheck clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check wippy_agents tests benchmarks processes tools
	$(BIN)/python -m mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The stress suites' long versions (tests/stress; `make test` runs each for seconds). Each is bounded in count
# and time and stops by itself.
soak: $(STAMP)
	WIPPY_SOAK=1 $(BIN)/python -m pytest tests/stress -n 0 --timeout=3600 $(PYTEST_ARGS)

typecheck: $(STAMP)
	$(BIN)/python -m mypy

run: $(STAMP)
	$(BIN)/wippy chat

# Every benchmark, one at a time, then bench-report.md and its plots in docs/bench/ (commit them).
bench: $(STAMP)
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
