"""The sweep engine: score every head (or group of heads) under an intervention, batched.

A sweep runs the prompts once without intervention (the base readout), then runs rows = groups x prompts
with each row carrying its own intervention (see interp.engine.run), so many heads share one forward pass.
A score function compares the base readout with the intervened one:

    per-prompt:    score_fn(base: [rows, ...], intervened: [rows, ...]) -> [rows], averaged over prompts;
    dataset-level: score_fn(base: [n_prompts, ...], intervened: [n_prompts, ...]) -> scalar.

Readouts: "logits" gives last-position log-probabilities [n_prompts, d_vocab]; "hidden" gives the
normalized final residual at the last position [n_prompts, d_model].
"""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from interp.core.errors import InterpError
from interp.core.heads import Head, HeadLike
from interp.core.progress import Progress, progress_iter
from interp.engine.checkpoint import SweepCheckpoint
from interp.engine.hookpoints import FINAL_HIDDEN, resid_name
from interp.engine.interventions import HeadIntervention, Rows, get_kind
from interp.engine.run import head_means, head_outputs, run_last
from interp.model.adopt import ModelLike, as_loaded_model
from interp.model.loaded import LoadedModel, TokenBatch

Readout = Literal["logits", "hidden"]
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SweepResult:
    """Scores per group of heads (a group is one head in a plain per-head sweep)."""

    groups: list[tuple[Head, ...]]
    scores: np.ndarray  # [n_groups]
    per_prompt: np.ndarray | None  # [n_groups, n_prompts], None for dataset-level score functions
    base: torch.Tensor  # the base readout, [n_prompts, ...]
    seconds: float
    forward_rows: int  # intervened rows run in this call (a cost measure for benchmarks)
    computed: np.ndarray | None = None  # [n_groups, n_prompts] bool: rows computed in this call
    resumed_rows: int = 0  # rows taken from a checkpoint instead of being computed

    def grid(self, n_layers: int, n_heads: int) -> np.ndarray:
        """[n_layers, n_heads] scores of single-head groups; NaN for heads not swept."""
        out = np.full((n_layers, n_heads), np.nan)
        for group, score in zip(self.groups, self.scores, strict=True):
            if len(group) == 1:
                out[group[0].layer, group[0].head] = score
        return out

    def per_prompt_grid(self, n_layers: int, n_heads: int) -> np.ndarray | None:
        """[n_prompts, n_layers, n_heads] per-prompt scores of single-head groups, or None."""
        if self.per_prompt is None:
            return None
        out = np.full((self.per_prompt.shape[1], n_layers, n_heads), np.nan)
        for group, values in zip(self.groups, self.per_prompt, strict=True):
            if len(group) == 1:
                out[:, group[0].layer, group[0].head] = values
        return out


def readout_of(
    model: LoadedModel,
    batch: TokenBatch,
    rows: Rows,
    readout: Readout,
    start_layer: int = 0,
    resid: torch.Tensor | None = None,
    capture_resid: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """The readout [batch, ...] of one pass, and (capture_resid) every layer's input residual, a list of
    n_layers tensors [batch, pos, d_model] for later passes to start from. A list, not a stacked tensor:
    with a device_map each layer's residual lives on that layer's device."""
    names = [FINAL_HIDDEN] if readout == "hidden" else []
    resid_names = [resid_name(layer) for layer in range(model.n_layers)] if capture_resid else []
    logits, store = run_last(model, batch, rows, capture=names + resid_names, start_layer=start_layer, resid=resid)
    out = store[FINAL_HIDDEN][:, -1].float() if readout == "hidden" else torch.log_softmax(logits, dim=-1)
    resids = [store[n] for n in resid_names] if capture_resid else None
    return out, resids


def resample_sources(n_prompts: int, seed: int) -> list[int]:
    """A seeded derangement: prompt i takes its resampled head outputs from prompt sources[i] != i."""
    if n_prompts < 2:
        raise InterpError("Resample ablation needs at least 2 prompts (each takes outputs from another).")
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n_prompts)
        if not np.any(perm == np.arange(n_prompts)):
            return perm.tolist()


def row_interventions(
    model: LoadedModel,
    batch: TokenBatch,
    kind: str,
    alpha: float | None,
    eps: float,
    reference: TokenBatch | None,
    resample_seed: int,
) -> Callable[[tuple[Head, ...], int], HeadIntervention]:
    """A factory (group, prompt index) -> intervention, with mean/resample values computed once."""
    spec = get_kind(kind)
    if kind == "scale" and alpha is None:
        raise InterpError('"scale" needs alpha (0 ablates, > 1 reinforces).')
    a = 1.0 if alpha is None else float(alpha)
    if spec.needs == "reference":
        means = head_means(model, reference if reference is not None else batch)
        return lambda group, p: HeadIntervention(group, kind, a, eps, means)  # type: ignore[arg-type]
    if spec.needs == "source":  # each prompt takes the head outputs of another prompt of the set
        sources = resample_sources(len(batch), resample_seed)
        z = head_outputs(model, batch)  # [n_layers, n_prompts, pos, n_heads, d_head]
        lengths = batch.lengths.tolist()
        seq = z.shape[2]
        # Each prompt's real (unpadded) positions; compile_rows right-aligns them to the batch again.
        real = [z[:, j, seq - lengths[j] :] for j in range(len(batch))]
        return lambda group, p: HeadIntervention(group, kind, a, eps, real[sources[p]])  # type: ignore[arg-type]
    return lambda group, p: HeadIntervention(group, kind, a, eps)  # type: ignore[arg-type]


def _prompt_chunk(model: LoadedModel, batch: TokenBatch, budget_bytes: float = 512e6) -> int:
    """Prompts per chunk so the cached residuals ([n_layers, chunk, pos, d_model] floats) fit the budget."""
    per_prompt = model.n_layers * batch.input_ids.shape[1] * model.d_model * 4
    return max(1, int(budget_bytes // per_prompt))


Row = tuple[int, int]  # (group index, prompt index within the chunk)


def plan_passes(rows: Sequence[Row], start: Sequence[int], lengths: Sequence[int], batch_size: int) -> list[list[Row]]:
    """Split rows into forward passes of at most batch_size rows.

    Rows are bucketed by the layer their pass starts at, so no row recomputes layers below its own start
    (a pass starts at its lowest row's layer). Within a bucket rows are sorted by prompt length, so each
    pass can drop the padding columns that no row in it needs. Buckets are split into near-equal passes."""
    buckets: dict[int, list[Row]] = {}
    for row in rows:
        buckets.setdefault(start[row[0]], []).append(row)
    passes: list[list[Row]] = []
    for layer in sorted(buckets):
        bucket = sorted(buckets[layer], key=lambda r: (lengths[r[1]], r[1], r[0]))
        n = -(-len(bucket) // batch_size)
        bounds = [round(i * len(bucket) / n) for i in range(n + 1)]
        passes += [bucket[a:b] for a, b in itertools.pairwise(bounds)]
    return passes


def _trim(batch: TokenBatch, width: int) -> TokenBatch:
    """Keep the last `width` positions (prompts are left-padded, so only padding is dropped)."""
    if width >= batch.input_ids.shape[1]:
        return batch
    return TokenBatch(batch.input_ids[:, -width:], batch.attention_mask[:, -width:], batch.texts, batch.template)


def _fingerprint(
    model: LoadedModel,
    batch: TokenBatch,
    ref: TokenBatch | None,
    groups: Sequence[tuple[Head, ...]],
    score_fn: ScoreFn,
    **settings: object,
) -> dict[str, object]:
    """What makes two sweeps the same sweep (a checkpoint may only be resumed by the same one)."""

    def digest(tb: TokenBatch | None) -> str | None:
        if tb is None:
            return None
        h = hashlib.sha256(tb.input_ids.cpu().numpy().tobytes())
        h.update(tb.attention_mask.cpu().numpy().tobytes())
        return h.hexdigest()[:24]

    params = list(model.hf_model.parameters())
    probe = [params[i] for i in np.linspace(0, len(params) - 1, min(8, len(params))).astype(int)]
    # A cheap check that the weights are the same: sums of a few parameter tensors, rounded.
    weights = [round(float(p.detach().float().sum()), 3) for p in probe]
    return {
        "model": model.name,
        "shape": [model.n_layers, model.n_heads, model.d_vocab],
        "weights_probe": weights,
        "prompts": digest(batch),
        "n_prompts": len(batch),
        "reference": digest(ref),
        "groups": [[h.label for h in g] for g in groups],
        "score_fn": f"{getattr(score_fn, '__module__', '?')}.{getattr(score_fn, '__qualname__', repr(score_fn))}",
        **settings,
    }


def sweep(
    model: ModelLike,
    prompts: Sequence[str] | TokenBatch,
    score_fn: ScoreFn,
    *,
    readout: Readout = "logits",
    dataset_level: bool = False,
    heads: Sequence[HeadLike] | None = None,
    groups: Sequence[Sequence[HeadLike]] | None = None,
    kind: str = "zero",
    alpha: float | None = None,
    eps: float = 1e-8,
    reference: Sequence[str] | None = None,
    template: str = "auto",
    batch_size: int = 32,
    resample_seed: int = 0,
    reuse_prefix: bool = True,
    prompt_chunk: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: float = 60.0,
    progress: Progress = True,
) -> SweepResult:
    """Score each head (or each group of heads) by `score_fn` under a `kind` intervention, batched.

    model: a LoadedModel, a TransformerBridge, or (hf_model, tokenizer) (see interp.model.adopt).

    score_fn: per-prompt, (base [rows, ...], intervened [rows, ...]) -> [rows], averaged over prompts;
        with dataset_level=True, (base [n_prompts, ...], intervened [n_prompts, ...]) -> scalar.
    heads: restrict a per-head sweep to these heads (default: every head).
    groups: score these groups instead (each group's heads are intervened on together).
    reference: prompts for "mean" ablation (default: the swept prompts themselves).
    batch_size: rows (group x prompt pairs) per forward pass.
    reuse_prefix: run the blocks below a row's lowest intervened layer once per prompt and start the
        intervened passes from the cached residual there (exact; about half the work of a full pass).
    prompt_chunk: prompts whose residuals are cached at a time (default: as many as fit in ~512 MB).
    checkpoint: a directory where finished rows are saved (see interp.engine.checkpoint); a sweep started again
        with the same directory and the same settings skips every row finished before.
    checkpoint_every: seconds between checkpoint writes (rows are also written when the sweep stops).
    """
    if batch_size < 1:
        raise InterpError(f"batch_size must be >= 1, got {batch_size}.")
    model = as_loaded_model(model)
    start = time.perf_counter()
    batch = prompts if isinstance(prompts, TokenBatch) else model.tokenize(prompts, template)
    ref = model.tokenize(reference, template) if reference else None
    if groups is not None:
        group_list = [model.parse_heads(g) for g in groups]
    else:
        group_list = [(h,) for h in (model.parse_heads(heads) if heads is not None else model.heads())]
    if not group_list:
        raise InterpError("Nothing to sweep: no heads or groups given.")
    make = row_interventions(model, batch, kind, alpha, eps, ref, resample_seed)
    n_prompts, n_groups = len(batch), len(group_list)
    low = [min(h.layer for h in g) if reuse_prefix else 0 for g in group_list]

    ckpt = None
    done = np.zeros((n_groups, n_prompts), dtype=bool)
    per_prompt = np.full((n_groups, n_prompts), np.nan)
    kept: dict[int, dict[int, torch.Tensor]] = {}  # dataset-level: group -> prompt -> readout
    if checkpoint is not None:
        settings = dict(readout=readout, dataset_level=dataset_level, kind=kind, alpha=alpha, eps=eps)
        fingerprint = _fingerprint(model, batch, ref, group_list, score_fn, resample_seed=resample_seed, **settings)
        ckpt = SweepCheckpoint(checkpoint, fingerprint, checkpoint_every)
        for g, p, value in ckpt.load():
            done[g, p] = True
            if dataset_level:
                kept.setdefault(g, {})[p] = torch.as_tensor(value)
            else:
                per_prompt[g, p] = float(value)
    resumed = int(done.sum())

    chunk = prompt_chunk or _prompt_chunk(model, batch)
    prompt_chunks = [list(range(i, min(i + chunk, n_prompts))) for i in range(0, n_prompts, chunk)]
    lengths = batch.lengths.tolist()
    plans = []
    for chunk_idx in prompt_chunks:
        todo = [(g, i) for g in range(n_groups) for i, p in enumerate(chunk_idx) if not done[g, p]]
        plans.append(plan_passes(todo, low, [lengths[p] for p in chunk_idx], batch_size))
    n_passes = sum(len(p) for p in plans)

    computed = np.zeros((n_groups, n_prompts), dtype=bool)
    base_parts: list[torch.Tensor] = []
    bar = progress_iter(range(n_passes), progress, desc="sweep", total=n_passes)
    try:
        with (
            torch.no_grad()
        ):  # not inference_mode: accelerate's offload hooks would turn weights into inference tensors
            for chunk_idx, passes in zip(prompt_chunks, plans, strict=True):
                sub = batch.select(chunk_idx)
                base_sub, resid = readout_of(model, sub, None, readout, capture_resid=reuse_prefix and bool(passes))
                base_parts.append(base_sub)
                for part in passes:
                    next(bar)
                    local = [i for _, i in part]
                    rows_batch = _trim(sub.select(local), max(lengths[chunk_idx[i]] for i in local))
                    width, first = rows_batch.input_ids.shape[1], low[part[0][0]]
                    out, _ = readout_of(
                        model,
                        rows_batch,
                        [make(group_list[g], chunk_idx[i]) for g, i in part],
                        readout,
                        start_layer=first,
                        resid=resid[first][local][:, -width:] if first else None,
                    )
                    if dataset_level:
                        values = out.cpu()
                    else:
                        values = score_fn(base_sub[local], out).double().cpu()
                    for (g, i), value in zip(part, values, strict=True):
                        p = chunk_idx[i]
                        computed[g, p] = True
                        if dataset_level:
                            kept.setdefault(g, {})[p] = value
                        else:
                            per_prompt[g, p] = float(value)
                        if ckpt is not None:
                            ckpt.add(g, p, value.numpy())
                    if ckpt is not None:
                        ckpt.maybe_flush()
                del resid
    finally:
        if ckpt is not None:
            ckpt.flush()  # also when interrupted: every finished row is kept
    for _ in bar:  # exhaust the progress iterator so the bar closes
        pass
    base = torch.cat(base_parts)
    if dataset_level:
        scores = np.array(
            [
                float(score_fn(base, torch.stack([kept[g][p] for p in range(n_prompts)]).to(base.device)))
                for g in range(n_groups)
            ]
        )
        result_per_prompt = None
    else:
        scores, result_per_prompt = per_prompt.mean(1), per_prompt
    return SweepResult(
        group_list,
        scores,
        result_per_prompt,
        base,
        time.perf_counter() - start,
        int(computed.sum()),
        computed,
        resumed,
    )


def kl_per_prompt(base_logprobs: torch.Tensor, ablated_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(base || ablated) per prompt, natural log: [n_prompts, d_vocab] x 2 -> [n_prompts]."""
    return (base_logprobs.exp() * (base_logprobs - ablated_logprobs)).sum(-1)
