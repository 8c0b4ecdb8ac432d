"""Deliberately naive reference implementations, for tests and benchmarks only.

`naive_sweep` runs one forward pass per head with a hand-written hook per intervention kind. It shares
no code with interp.engine.run' batched machinery on purpose: the tests check the fast engine against it, so
it must be simple enough to be obviously right.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from interp.core.heads import Head
from interp.engine.sweep import ScoreFn, SweepResult, resample_sources
from interp.model.loaded import LoadedModel


def _run(model: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, hooks: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Full forward; returns last-position log-probs [batch, vocab] and final hidden [batch, d_model]."""
    store = {}

    def keep(t: torch.Tensor, hook: object) -> None:
        store["h"] = t[:, -1].detach().float()

    with torch.no_grad():
        logits = model.bridge.run_with_hooks(ids, attention_mask=mask, fwd_hooks=[*hooks, ("ln_final.hook_out", keep)])
    return torch.log_softmax(logits[:, -1].float(), -1), store["h"]


def _z_of_prompt(model: LoadedModel, text_ids: torch.Tensor, layer: int, head: int) -> torch.Tensor:
    """One prompt alone (no padding): head output [pos, d_head]."""
    store = {}

    def keep(z: torch.Tensor, hook: object) -> None:
        store["z"] = z[0, :, head].detach().clone()

    with torch.no_grad():
        model.bridge.run_with_hooks(text_ids, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", keep)])
    return store["z"]


def _hook(kind: str, head: Head, alpha: float, eps: float, fill: torch.Tensor | None) -> tuple[str, Callable]:
    """A plain hook doing one intervention kind to one head."""
    h = head.head
    if kind == "uniform":

        def scale_query(q: torch.Tensor, hook: object) -> torch.Tensor:
            q = q.clone()
            q[:, :, h] = q[:, :, h] * eps
            return q

        return f"blocks.{head.layer}.attn.hook_q", scale_query

    def change_output(z: torch.Tensor, hook: object) -> torch.Tensor:
        z = z.clone()
        if kind == "zero":
            z[:, :, h] = 0.0
        elif kind == "scale":
            z[:, :, h] = z[:, :, h] * alpha
        else:  # mean: [d_head] for every row and position; resample: [rows, pos, d_head]
            z[:, :, h] = fill.to(z)  # fill lives on the CPU; z on the model's device
        return z

    return f"blocks.{head.layer}.attn.hook_z", change_output


def naive_sweep(
    model: LoadedModel,
    prompts: Sequence[str],
    score_fn: ScoreFn,
    *,
    readout: str = "logits",
    heads: Sequence[Head] | None = None,
    kind: str = "zero",
    alpha: float = 1.0,
    eps: float = 1e-8,
    reference: Sequence[str] | None = None,
    template: str = "auto",
    resample_seed: int = 0,
) -> SweepResult:
    batch = model.tokenize(prompts, template)
    ids, mask = batch.input_ids, batch.attention_mask
    n_prompts, seq = ids.shape
    unpadded = [ids[i, seq - int(mask[i].sum()) :][None] for i in range(n_prompts)]
    base_lp, base_h = _run(model, ids, mask, [])
    base = base_lp if readout == "logits" else base_h
    heads = list(heads) if heads is not None else list(model.heads())
    ref_texts = list(reference) if reference else list(prompts)
    ref_ids = [model.tokenize([p], template).input_ids for p in ref_texts]
    sources = resample_sources(n_prompts, resample_seed) if kind == "resample" else []
    scores, per_prompt = [], []
    for head in heads:
        fill = None
        if kind == "mean":
            # Mean over every token of every reference prompt, one prompt at a time.
            fill = torch.cat([_z_of_prompt(model, r, head.layer, head.head) for r in ref_ids]).mean(0)
        elif kind == "resample":
            fill = torch.zeros(n_prompts, seq, model.d_head)
            for i in range(n_prompts):
                src = _z_of_prompt(model, unpadded[sources[i]], head.layer, head.head)
                for k in range(seq):  # position k from the end of the target <- same from the source's end
                    j = src.shape[0] - (seq - k)
                    fill[i, k] = src[j] if j >= 0 else src.mean(0)
        hooks = [_hook(kind, head, alpha, eps, fill)]
        lp, hid = _run(model, ids, mask, hooks)
        value = score_fn(base, lp if readout == "logits" else hid)
        if value.ndim == 0:
            scores.append(float(value))
        else:
            per_prompt.append(value.double().cpu().numpy())
            scores.append(float(value.double().mean()))
    return SweepResult(
        [(h,) for h in heads],
        np.array(scores),
        np.array(per_prompt) if per_prompt else None,
        base,
        0.0,
        len(heads) * n_prompts,
    )


def naive_group_readout(
    model: LoadedModel,
    prompts: Sequence[str],
    heads: Sequence[Head],
    *,
    readout: str = "hidden",
    kind: str = "zero",
    alpha: float = 1.0,
    eps: float = 1e-8,
    template: str = "auto",
) -> torch.Tensor:
    """One full forward with every head of `heads` intervened on together (kinds zero, scale, uniform), no
    batching tricks: last-position log-probs [n_prompts, d_vocab] or final hidden states [n_prompts, d_model]."""
    if kind not in ("zero", "scale", "uniform"):
        raise ValueError(f"naive_group_readout does zero, scale and uniform, not {kind!r}")
    batch = model.tokenize(prompts, template)
    lp, hid = _run(model, batch.input_ids, batch.attention_mask, [_hook(kind, h, alpha, eps, None) for h in heads])
    return lp if readout == "logits" else hid
