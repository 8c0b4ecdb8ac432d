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
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from interp.core.errors import InterpError
from interp.core.heads import Head, HeadLike
from interp.core.progress import Progress, progress_iter
from interp.engine.checkpoint import SweepCheckpoint
from interp.engine.hookpoints import FINAL_HIDDEN, resid_name
from interp.engine.interventions import HeadIntervention, Rows, get_kind
from interp.engine.prefix import shared_prefix_length, split_prefix, suffix_lengths, worth_sharing
from interp.engine.run import PrefixKV, head_means, head_outputs, prefix_cache_supported, run_last, run_prefix
from interp.model.adopt import ModelLike, as_loaded_model
from interp.model.loaded import ImageBatch, LoadedModel, TokenBatch

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
    shared_prefix: list[int] = field(default_factory=list)  # per prompt chunk: prefix tokens run once (0: none)

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
    prefix: PrefixKV | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """The readout [batch, ...] of one pass, and (capture_resid) every layer's input residual, a list of
    n_layers tensors [batch, pos, d_model] for later passes to start from. A list, not a stacked tensor:
    with a device_map each layer's residual lives on that layer's device.
    prefix: cached keys/values of tokens before every row (run_last); `batch` holds the tokens after them."""
    names = [FINAL_HIDDEN] if readout == "hidden" else []
    resid_names = [resid_name(layer) for layer in range(model.n_layers)] if capture_resid else []
    logits, store = run_last(
        model, batch, rows, capture=names + resid_names, start_layer=start_layer, resid=resid, prefix=prefix
    )
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


Block = tuple[int, list[int], list[list[Row]]]  # (start layer, groups, passes over their rows)


def plan_blocks(
    rows: Sequence[Row], start: Sequence[int], lengths: Sequence[int], batch_size: int, max_groups: Callable[[int], int]
) -> list[Block]:
    """Plan a chunk whose shared prefix is run once per group (see sweep's shared_prefix).

    Rows are bucketed by start layer as in plan_passes; each bucket's groups are taken max_groups(layer) at a
    time (their prefix keys/values are held in memory together), and those groups' rows are split into
    passes as plan_passes does (sorted by suffix length, near-equal passes of at most batch_size rows)."""
    by_layer: dict[int, dict[int, list[Row]]] = {}
    for row in rows:
        by_layer.setdefault(start[row[0]], {}).setdefault(row[0], []).append(row)
    blocks: list[Block] = []
    for layer in sorted(by_layer):
        groups = list(by_layer[layer])
        step = max(1, max_groups(layer))
        for i in range(0, len(groups), step):
            part = groups[i : i + step]
            block_rows = [r for g in part for r in by_layer[layer][g]]
            blocks.append((layer, part, plan_passes(block_rows, start, lengths, batch_size)))
    return blocks


def _prefix_passes(n_groups: int, batch_size: int) -> int:
    return -(-n_groups // batch_size)


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
    fixed: Sequence[HeadLike] | None = None,
    kind: str = "zero",
    alpha: float | None = None,
    eps: float = 1e-8,
    reference: Sequence[str] | None = None,
    template: str = "auto",
    batch_size: int = 32,
    resample_seed: int = 0,
    reuse_prefix: bool = True,
    shared_prefix: bool | None = None,
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
    fixed: heads intervened on in every row besides the row's group (Sahara: the group found so far). The
        residuals the passes start from are cached from a pass with `fixed` intervened on, so each group's
        pass still starts at the group's own lowest layer; the base readout stays the unintervened one.
        Results are reported per group as given (without `fixed`).
    reference: prompts for "mean" ablation (default: the swept prompts themselves).
    batch_size: rows (group x prompt pairs) per forward pass.
    reuse_prefix: run the blocks below a row's lowest intervened layer once per prompt and start the
        intervened passes from the cached residual there (exact; about half the work of a full pass).
    shared_prefix: run the token prefix common to all prompts of a chunk (a chat template's system prompt)
        once per group and only each prompt's suffix against its cached keys/values (interp.engine.prefix;
        exact). None (default): when it removes >= 10% of the token positions; True: whenever prompts share
        a token; False: never. Not for "resample" (its patched values differ per prompt at every position),
        image batches, or caches transformers lays out otherwise (e.g. sliding windows shorter than the
        prompts): those run as without it.
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
    fixed_heads = model.parse_heads(fixed) if fixed else ()
    # What each row intervenes on: the fixed heads and its group's (once each).
    row_heads = [tuple(dict.fromkeys((*fixed_heads, *g))) for g in group_list]
    make = row_interventions(model, batch, kind, alpha, eps, ref, resample_seed)
    n_prompts, n_groups = len(batch), len(group_list)
    low = [min(h.layer for h in g) if reuse_prefix else 0 for g in group_list]

    ckpt = None
    done = np.zeros((n_groups, n_prompts), dtype=bool)
    per_prompt = np.full((n_groups, n_prompts), np.nan)
    kept: dict[int, dict[int, torch.Tensor]] = {}  # dataset-level: group -> prompt -> readout
    if checkpoint is not None:
        settings = dict(readout=readout, dataset_level=dataset_level, kind=kind, alpha=alpha, eps=eps)
        if fixed_heads:  # recorded only when given, so checkpoints written before `fixed` existed still resume
            settings["fixed"] = [h.label for h in fixed_heads]
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
    shareable = shared_prefix is not False and get_kind(kind).needs != "source" and not isinstance(batch, ImageBatch)
    plans: list[tuple[int, list[Block]]] = []  # per chunk: (shared prefix tokens, blocks)
    for chunk_idx in prompt_chunks:
        todo = [(g, i) for g in range(n_groups) for i, p in enumerate(chunk_idx) if not done[g, p]]
        shared = 0
        if shareable and todo:
            sub = batch.select(chunk_idx)
            shared = shared_prefix_length(sub)
            wanted = shared > 0 if shared_prefix else worth_sharing(sub, shared)
            if not (wanted and prefix_cache_supported(model, max(lengths[p] for p in chunk_idx))):
                shared = 0
        if shared:
            kv_bytes = _kv_bytes(model, shared)
            blocks = plan_blocks(
                todo,
                low,
                [lengths[p] - shared for p in chunk_idx],
                batch_size,
                lambda layer, b=kv_bytes: max(batch_size, int(256e6 // max(1, (model.n_layers - layer) * b))),
            )
        else:
            blocks = [(-1, [], plan_passes(todo, low, [lengths[p] for p in chunk_idx], batch_size))]
        plans.append((shared, blocks))
    n_passes = sum(_prefix_passes(len(gs), batch_size) * (s > 0) + len(ps) for s, bl in plans for _, gs, ps in bl)

    computed = np.zeros((n_groups, n_prompts), dtype=bool)
    base_parts: list[torch.Tensor] = []
    bar = progress_iter(range(n_passes), progress, desc="sweep", total=n_passes)

    def record(part: list[Row], chunk_idx: list[int], base_sub: torch.Tensor, out: torch.Tensor) -> None:
        local = [i for _, i in part]
        values = out.cpu() if dataset_level else score_fn(base_sub[local], out).double().cpu()
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

    try:
        with (
            torch.no_grad()
        ):  # not inference_mode: accelerate's offload hooks would turn weights into inference tensors
            for chunk_idx, (shared, blocks) in zip(prompt_chunks, plans, strict=True):
                sub = batch.select(chunk_idx)
                has_rows = any(ps for _, _, ps in blocks)
                # The context pass: its residuals (and, with a shared prefix, the prefix's keys/values) are what
                # every intervened pass starts from; with `fixed` heads it runs with those intervened on.
                context = [make(fixed_heads, p) for p in chunk_idx] if fixed_heads else None
                if fixed_heads:
                    base_sub, _ = readout_of(model, sub, None, readout)
                if not shared:
                    if not fixed_heads:
                        base_sub, resid = readout_of(model, sub, None, readout, capture_resid=reuse_prefix and has_rows)
                    elif reuse_prefix and has_rows:
                        _, resid = readout_of(model, sub, context, readout, capture_resid=True)
                    else:
                        resid = None
                    base_parts.append(base_sub)
                    base_now = base_sub
                    for _, _, passes in blocks:
                        for part in passes:
                            next(bar)
                            local = [i for _, i in part]
                            rows_batch = _trim(sub.select(local), max(lengths[chunk_idx[i]] for i in local))
                            width, first = rows_batch.input_ids.shape[1], low[part[0][0]]
                            out, _ = readout_of(
                                model,
                                rows_batch,
                                [make(row_heads[g], chunk_idx[i]) for g, i in part],
                                readout,
                                start_layer=first,
                                resid=resid[first][local][:, -width:] if first else None,
                            )
                            record(part, chunk_idx, base_now, out)
                    del resid
                    continue

                prefix_batch, suffixes = split_prefix(sub, shared)
                tails = suffix_lengths(sub, shared)
                resid_names = [resid_name(layer) for layer in range(model.n_layers)] if reuse_prefix else []
                context_kv, store = run_prefix(model, prefix_batch, context[:1] if context else None, resid_names)
                prefix_resid = [store[n] for n in resid_names]  # [1, shared, d_model] per layer
                out, resid = readout_of(
                    model, suffixes, context, readout, capture_resid=reuse_prefix and has_rows, prefix=context_kv
                )
                base_parts.append(out if not fixed_heads else base_sub)
                base_now = base_parts[-1]
                for layer, block_groups, passes in blocks:
                    # Each group's prefix under its intervention, one row per group; layers below `layer` are
                    # the context's (nothing below is intervened on beyond what the context pass did).
                    kv: PrefixKV | None = None
                    for i in range(0, len(block_groups), batch_size):
                        next(bar)
                        part_groups = block_groups[i : i + batch_size]
                        k = len(part_groups)
                        part_kv, _ = run_prefix(
                            model,
                            prefix_batch.select([0] * k),
                            # Non-"source" kinds treat every prompt alike: any prompt's intervention serves.
                            [make(row_heads[g], chunk_idx[0]) for g in part_groups],
                            start_layer=layer,
                            resid=prefix_resid[layer].expand(k, -1, -1) if layer else None,
                            below=context_kv,
                        )
                        kv = part_kv if kv is None else kv.cat(part_kv)
                    assert kv is not None
                    where = {g: j for j, g in enumerate(block_groups)}
                    for part in passes:
                        next(bar)
                        local = [i for _, i in part]
                        rows_batch = _trim(suffixes.select(local), max(tails[i] for i in local))
                        width = rows_batch.input_ids.shape[1]
                        out, _ = readout_of(
                            model,
                            rows_batch,
                            [make(row_heads[g], chunk_idx[i]) for g, i in part],
                            readout,
                            start_layer=layer,
                            resid=resid[layer][local][:, -width:] if layer else None,
                            prefix=kv.take([where[g] for g, _ in part]),
                        )
                        record(part, chunk_idx, base_now, out)
                    del kv
                del resid, context_kv, prefix_resid
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
        [shared for shared, _ in plans],
    )


def _kv_bytes(model: LoadedModel, length: int) -> int:
    """Bytes of one layer's cached keys and values for one row of a `length`-token prefix."""
    return 2 * model.n_kv_heads * length * model.d_head * torch.finfo(model.dtype).bits // 8


def kl_per_prompt(base_logprobs: torch.Tensor, ablated_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(base || ablated) per prompt, natural log: [n_prompts, d_vocab] x 2 -> [n_prompts]."""
    return (base_logprobs.exp() * (base_logprobs - ablated_logprobs)).sum(-1)
