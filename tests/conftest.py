"""Shared fixtures: tiny random models (seconds) and the embedded default model (loaded once per session).

The tests never reach a model hub: this file turns huggingface_hub / transformers offline for the test
process (and the notebook kernels, app servers and CLI subprocesses it starts) before anything imports them.
The package itself sets nothing (tests/test_hub.py checks that importing interp leaves os.environ alone).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest

import interp
from interp.model.tiny import build_tiny

PROMPTS = ["hello world", "the cat sat on the mat", "abc", "what is this thing?"]


@pytest.fixture(scope="session")
def tiny_llama() -> interp.LoadedModel:
    return interp.load_model("tiny-llama")


@pytest.fixture(scope="session")
def tiny_gpt2() -> interp.LoadedModel:
    return interp.load_model("tiny-gpt2")


@pytest.fixture(scope="session", params=["tiny-llama", "tiny-gpt2"])
def tiny_model(request: pytest.FixtureRequest) -> interp.LoadedModel:
    return interp.load_model(request.param)


@pytest.fixture(scope="session")
def default_model() -> interp.LoadedModel:
    return interp.load_model("default")


@pytest.fixture
def fresh_tiny_llama() -> interp.LoadedModel:
    """A private copy for tests that change weights."""
    hf, tok = build_tiny("llama")
    return interp.wrap_model(hf, tok, "tiny-llama-copy")
