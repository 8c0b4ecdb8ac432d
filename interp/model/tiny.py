"""Tiny random models built in code, for tests and examples: seconds to build, no files needed.

The tokenizer is byte-level (256 byte symbols + <pad>, <s>, </s>), so any text tokenizes without a vocab
file and the models stay tiny. Everything is seeded: the same name always gives the same weights.
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
from tokenizers import models as tok_models
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

PAD, BOS, EOS = "<pad>", "<s>", "</s>"

# Default shapes: small enough for exact brute-force tests, big enough to exercise GQA and several layers.
TINY_LLAMA = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)
TINY_GPT2 = dict(n_embd=64, n_layer=3, n_head=4, n_positions=512)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer that prepends <s>; ids 0-2 are <pad>, <s>, </s>."""
    vocab = {PAD: 0, BOS: 1, EOS: 2}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    tok = Tokenizer(tok_models.WordLevel(vocab=vocab, unk_token=PAD))
    # ByteLevel maps bytes to printable symbols; Split("") then makes every symbol its own token.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False), pre_tokenizers.Split("", "isolated")]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 1)]
    )
    # add_bos_token=True tells TransformerLens this tokenizer already prepends BOS, so it does not try
    # to re-load it from a (non-existent) hub name.
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=PAD,
        add_bos_token=True,
        name_or_path="interp-byte-tokenizer",
        padding_side="left",
    )


def build_tiny(arch: str = "llama", seed: int = 0, **overrides: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A seeded random causal LM ("llama", "gpt2" or "qwen2") and its byte tokenizer; `overrides` change config
    fields. "qwen2" has the Llama shapes plus Qwen2's q/k/v projection biases (random, so they matter)."""
    tokenizer = byte_tokenizer()
    common = dict(vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "llama":
        config = LlamaConfig(**{**common, **TINY_LLAMA, "tie_word_embeddings": False, **overrides})
        model_cls: type[PreTrainedModel] = LlamaForCausalLM
    elif arch == "gpt2":
        config = GPT2Config(**{**common, **TINY_GPT2, **overrides})
        model_cls = GPT2LMHeadModel
    elif arch == "qwen2":
        config = Qwen2Config(**{**common, **TINY_LLAMA, "tie_word_embeddings": False, **overrides})
        model_cls = Qwen2ForCausalLM
    else:
        raise ValueError(f'Unknown tiny architecture "{arch}"; choose "llama", "gpt2" or "qwen2".')
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    # Random init gives near-uniform attention; a larger init spread makes heads differ, so tests that
    # rank heads are meaningful. Scaled in place, still seeded.
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        for name, param in model.named_parameters():
            if param.ndim == 2 and "embed" not in name and "wte" not in name and "wpe" not in name:
                param.normal_(0.0, 0.15)
            elif arch == "qwen2" and name.endswith("proj.bias"):
                param.normal_(0.0, 0.5)
    return model.eval(), tokenizer
