"""A small GPT-style character LM whose nonlinearities can be switched off (nanoGPT-like, one file).

Variants differ only in two switches: `layernorm` (pre-LN blocks and the final LN, or none at all) and
`activation` (the FFN's GELU or ReLU). Attention is computed explicitly (no fused kernel) because the
experiment needs the attention probabilities: for the entropy regularizer during training (differentiable) and
for the entropy profile after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from interp.core.config import Config, positive
from interp.core.errors import InterpError

Activation = Literal["gelu", "relu"]


@dataclass(frozen=True)
class GPTConfig(Config):
    vocab_size: int = 80
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    n_ctx: int = 128
    layernorm: bool = True
    activation: Activation = "gelu"

    def check(self) -> None:
        for name in ("vocab_size", "n_layer", "n_head", "d_model", "n_ctx"):
            positive(name, getattr(self, name))
        if self.d_model % self.n_head:
            raise InterpError(f"d_model ({self.d_model}) must be a multiple of n_head ({self.n_head}).")


def _norm(cfg: GPTConfig) -> nn.Module:
    return nn.LayerNorm(cfg.d_model) if cfg.layernorm else nn.Identity()


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.d_head = cfg.n_head, cfg.d_model // cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.register_buffer("causal", torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool).tril(), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: [batch, pos, d_model] -> (out [batch, pos, d_model], pattern [batch, n_head, pos, pos])
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, self.d_head).permute(2, 0, 3, 1, 4)  # each [b, h, t, dh]
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_head)  # [b, h, t, t]
        scores = scores.masked_fill(~self.causal[:t, :t], float("-inf"))
        pattern = scores.softmax(-1)
        z = (pattern @ v).transpose(1, 2).reshape(b, t, d)
        return self.out(z), pattern


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = _norm(cfg), _norm(cfg)
        self.attn = Attention(cfg)
        self.fc_in = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.fc_out = nn.Linear(4 * cfg.d_model, cfg.d_model)
        self.act = nn.GELU() if cfg.activation == "gelu" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, pattern = self.attn(self.ln1(x))
        x = x + a
        x = x + self.fc_out(self.act(self.fc_in(self.ln2(x))))
        return x, pattern


class GPT(nn.Module):
    """Token + learned position embeddings, n_layer blocks, (optional) final LN, tied unembedding."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = _norm(cfg)
        self.apply(self._init)
        # GPT-2's scaled init of the residual projections keeps the residual stream's growth in check.
        for block in self.blocks:
            for proj in (block.attn.out, block.fc_out):
                nn.init.normal_(proj.weight, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, 0.02)

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # idx: [batch, pos] -> (logits [batch, pos, vocab], patterns: n_layer x [batch, n_head, pos, pos])
        t = idx.shape[1]
        if t > self.cfg.n_ctx:
            raise InterpError(f"Sequence of {t} tokens is longer than the model's context ({self.cfg.n_ctx}).")
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        patterns = []
        for block in self.blocks:
            x, pattern = block(x)
            patterns.append(pattern)
        logits = self.ln_f(x) @ self.tok.weight.T
        return logits, patterns

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits, patterns = self(idx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)), patterns
