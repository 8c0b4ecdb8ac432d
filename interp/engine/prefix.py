"""The token prefix shared by a set of prompts, and the batch layout that runs it once (see sweep's shared_prefix).

Real runs format every prompt with a chat template, so all prompts start with the same tokens (the system
prompt and role markers: ~25-30 tokens on SmolLM2 and Qwen2.5). A position's residual depends only on the
tokens up to it (causal attention), so those positions' states are the same in every prompt, under any
intervention that treats every prompt alike at every prefix position. The sweep runs the prefix once (one
row per group of heads), keeps its attention keys/values (interp.engine.run.PrefixKV) and runs only each
prompt's suffix against them.

Layout. Prompts are left-padded: [pad pad p p p s s s] (p: shared prefix, s: the prompt's own suffix).
The suffix batch keeps the last max(suffix length) columns of the padded batch and masks everything that is
not the row's own suffix, so its rows read [x x s s s] with x masked out; with the cached prefix in front
the attention sees [p p p | x x s s s] with the x columns masked, and positions continue at the prefix
length (P + 0, P + 1, ...). The last column is the last prompt token of every row, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp.model.loaded import TokenBatch

MIN_SHARED_TOKENS = 4  # below this a prefix pass saves less than its own overhead
MIN_SHARED_FRACTION = 0.1  # "auto": share only when it removes >= 10% of the token positions of a chunk


def shared_prefix_length(batch: TokenBatch) -> int:
    """Tokens at the start of every (unpadded) prompt of the batch, at most the shortest length - 1 (every
    prompt keeps at least its last token in the suffix, where the readout is)."""
    seq = batch.input_ids.shape[1]
    lengths = batch.lengths.tolist()
    if not lengths:
        return 0
    rows = [batch.input_ids[i, seq - n :] for i, n in enumerate(lengths)]
    limit = min(lengths) - 1
    if limit <= 0:
        return 0
    first = rows[0][:limit]
    same = torch.ones(limit, dtype=torch.bool, device=first.device)
    for row in rows[1:]:
        same &= row[:limit] == first
    mismatch = (~same).nonzero()
    return int(mismatch[0, 0]) if len(mismatch) else limit


def worth_sharing(batch: TokenBatch, length: int) -> bool:
    """The "auto" rule: a prefix of `length` tokens is run once instead of len(batch) times when that removes
    at least MIN_SHARED_FRACTION of the chunk's token positions (and is at least MIN_SHARED_TOKENS long)."""
    if length < MIN_SHARED_TOKENS or len(batch) < 2:
        return False
    return length * (len(batch) - 1) >= MIN_SHARED_FRACTION * float(batch.lengths.sum())


def split_prefix(batch: TokenBatch, length: int) -> tuple[TokenBatch, TokenBatch]:
    """The shared prefix as a one-row unpadded batch [1, length], and the suffixes [n, max suffix] laid out
    as described in the module docstring (left-padded; prefix columns of shorter rows are masked)."""
    seq = batch.input_ids.shape[1]
    lengths = batch.lengths  # [n]
    suffix = lengths - length  # [n], each >= 1
    width = int(suffix.max())
    first = seq - int(lengths[0])
    prefix_ids = batch.input_ids[0:1, first : first + length]  # [1, length]
    prefix = TokenBatch(prefix_ids, torch.ones_like(prefix_ids), [""], batch.template)
    cols = torch.arange(width, device=batch.attention_mask.device)
    mask = (cols[None, :] >= (width - suffix.to(cols.device))[:, None]).to(batch.attention_mask.dtype)
    suffixes = TokenBatch(batch.input_ids[:, seq - width :], mask, list(batch.texts), batch.template)
    return prefix, suffixes


def suffix_lengths(batch: TokenBatch, length: int) -> Sequence[int]:
    return (batch.lengths - length).tolist()
