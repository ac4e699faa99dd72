# The two set-up commands of the README: `make book` (the main job) and `make test`.
# Each creates the virtual environment it needs on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: book test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

book: $(VENV)/.installed
	$(BIN)/punl run digits-quick
	$(BIN)/punl book

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python -m punl.bench pergrad
	$(BIN)/python -m punl.bench privacy
	$(BIN)/python -m punl.bench unlearn

clean:
	rm -rf runs _build book/runs
