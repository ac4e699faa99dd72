# The two set-up commands of the README: `make book` (the main job) and `make test-all` (every
# test, as CI runs it). `make test` is the fast suite (no notebook execution or book build, no
# fault injection: those tests are marked slow); `make test-faults` runs the fault-injection suite.
# Each creates the virtual environment it needs on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: book test test-all test-faults bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

book: $(VENV)/.installed
	$(BIN)/punl run digits-quick
	$(BIN)/punl book

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

test-faults: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m faults

test-all: $(VENV)/.installed
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks pergrad
	$(BIN)/python -m benchmarks privacy
	$(BIN)/python -m benchmarks evaluation

clean:
	rm -rf runs _build book/runs
