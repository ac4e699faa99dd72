# The two set-up commands of the README: `make book` (the main job) and `make test-all` (every
# test, as CI runs it). `make book-full` builds the full book: digits-quick replicated over five
# seeds, four more configurations (fashion-mnist replicated over four seeds) and a sweep of
# sigma (measured times in the README). `make test` is the fast suite (no notebook execution
# or book build, no fault injection: those tests are marked slow); `make test-faults` runs the
# fault-injection suite. Each creates the virtual environment it needs on first use, from the
# known-good set in constraints.txt; `make test-all` also installs Debian's Chromium for the
# browser tests where it can (scripts/ensure-chromium).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Two test processes (pytest-xdist), one per core: each file's tests in one (tests/conftest.py)
PYTEST := $(BIN)/python -m pytest -q -n 2
# matplotlib's font cache kept beside the environment whose fonts it lists: the one in the home
# folder is shared by every environment, and one written while another's fonts were missing
# makes the notebooks print font warnings into the book.
export MPLCONFIGDIR := $(abspath $(VENV))/matplotlib

.PHONY: book book-full test test-all test-faults bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

book: $(VENV)/.installed
	$(BIN)/punl run digits-quick
	$(BIN)/punl book

# Sweep points run two at a time, each unlearning in one process (workers is a runtime field).
SIGMAS ?= 0.25,0.5,1,2
# digits-quick replicated over these seeds first, so that its summary chapter counts the verdicts
SEEDS ?= 0,1,2,3,4
# fashion-mnist replicated over these seeds before its run, for the same reason
FASHION_SEEDS ?= 0,1,2,3

book-full: $(VENV)/.installed
	scripts/ensure-fashion-mnist
	$(BIN)/punl sweep digits-quick --grid seed=$(SEEDS) --set workers=1 --workers 2
	$(BIN)/punl run digits-quick
	$(BIN)/punl run digits-lownoise
	$(BIN)/punl run digits
	$(BIN)/punl run mnist5k
	$(BIN)/punl sweep fashion-mnist --grid seed=$(FASHION_SEEDS) --set workers=1 --workers 2
	$(BIN)/punl run fashion-mnist
	$(BIN)/punl sweep digits-quick --grid sigma=$(SIGMAS) --set workers=1 --workers 2
	$(BIN)/punl book

test: $(VENV)/.installed
	$(PYTEST) -m "not slow"

test-faults: $(VENV)/.installed
	$(PYTEST) -m faults

test-all: $(VENV)/.installed
	scripts/ensure-chromium
	scripts/ensure-fashion-mnist
	$(PYTEST)

bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks pergrad
	$(BIN)/python -m benchmarks privacy
	$(BIN)/python -m benchmarks evaluation

clean:
	rm -rf runs _build book/runs book/sweeps book/generated
