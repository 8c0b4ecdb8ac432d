"""Hook points of the TransformerBridge that the toolkit reads and writes, and attaching hooks safely.

Shapes (per layer l):
    blocks.{l}.attn.hook_z        [batch, pos, n_heads, d_head]  each head's attention-weighted values
    blocks.{l}.attn.hook_q        [batch, pos, n_heads, d_head]
    blocks.{l}.attn.hook_v        [batch, pos, n_kv_heads, d_head]  (GQA: one value per K/V head)
    blocks.{l}.attn.hook_pattern  [batch, n_heads, q_pos, k_pos]
    blocks.{l}.hook_resid_pre     [batch, pos, d_model]
    ln_final.hook_out             [batch, pos, d_model]  the normalized final residual

Private TransformerLens API is used here and in interp/model/bridge.py only (tests/test_bridge_api.py pins it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from interp.model import LoadedModel


def z_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def q_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_q"


def v_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_v"  # [batch, pos, n_kv_heads, d_head]: GQA keeps one value per K/V head


def pattern_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def resid_name(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"  # [batch, pos, d_model], the residual entering block `layer`


FINAL_HIDDEN = "ln_final.hook_out"  # [batch, pos, d_model], the normalized final residual


@contextlib.contextmanager
def hooked(model: LoadedModel, fwd_hooks: Sequence[tuple[str, Callable]]) -> Iterator[None]:
    """Attach TransformerLens hooks for the duration of the block; removed also after an exception."""
    with model.bridge.hooks(fwd_hooks=list(fwd_hooks)):
        yield


def hook_count(model: LoadedModel) -> int:
    """Forward hooks currently attached to the bridge's hook points (0 when nothing is attached).

    Reads HookPoint._forward_hooks (torch private): TransformerLens offers no public count. Each hook point
    counts once, though hook_dict lists some under two names (hook_z is also attn.o.hook_in)."""
    points = {id(hp): hp for hp in model.bridge.hook_dict.values()}
    return sum(len(hp._forward_hooks) for hp in points.values())


@contextlib.contextmanager
def layers_from(model: LoadedModel, start: int) -> Iterator[None]:
    """Run only blocks >= start: the HF model's layer list is cut for the duration of the block.

    Used with the bridge's start_at_layer, which swaps the cached residual in as block `start`'s input.
    The bridge alone would still compute (and discard) blocks 0..start-1; cutting the list skips them.
    Relies on the adapter's component_mapping["blocks"].name (TransformerLens internal: where the HF model
    keeps its layer list).
    Blocks keep their own indices and hook names, so hooks on later layers fire as usual."""
    if start == 0:
        yield
        return
    path = model.bridge.adapter.component_mapping["blocks"].name  # e.g. "model.layers", "transformer.h"
    parent_path, _, attr = path.rpartition(".")
    parent = model.hf_model.get_submodule(parent_path) if parent_path else model.hf_model
    full = getattr(parent, attr)
    setattr(parent, attr, torch.nn.ModuleList(list(full)[start:]))
    try:
        yield
    finally:
        setattr(parent, attr, full)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (left padding), as the bridge derives them for token input."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def teardown_start_at_layer(model: LoadedModel) -> None:
    """Clear the bridge's start_at_layer state after a pass that an exception stopped early.

    TransformerLens clears it only at the end of a completed forward (private `_teardown_start_at_layer`)."""
    model.bridge._teardown_start_at_layer()
