"""Attribution screening: estimate every head's ablation effect from gradients in a few passes.

The exact sweep (interp.engine.sweep) runs one intervened pass per head and prompt. Attribution instead runs one
forward pass with autograd, reads each head's output z [batch, pos, d_head] and the change the ablation
would make to it, delta = z_ablated - z, and estimates the effect of every head at once from gradients.

Change of head output, per ablation kind (per query head; GQA-aware):
    zero:     delta = -z
    scale:    delta = (alpha - 1) z
    mean:     delta = mean_z - z               (means over reference prompts, as in the exact sweep)
    uniform:  delta = cummean(v) - z            (Ships' "undifferentiated attention": with q scaled by eps
              the head attends uniformly to the causal prefix, so it outputs the running mean of the
              values; the values a query head reads are those of its K/V group, v[:, :, h // group_size].
              This is the eps -> 0 limit; the difference to eps=1e-8 is O(eps).)

Linear metrics, first order (attribution patching): effect ~= <grad m, delta>, summed over positions.
    logprob:  m = log p(top-1 token of the base prediction) at the last position
    margin:   m = logit(top-1) - logit(top-2) of the base prediction (a logit difference)

KL, second order. KL(p || p_ablated) has value 0 and gradient 0 at delta = 0, so first order says
nothing; the leading term is the Fisher quadratic form. With h the normalized final hidden state at the
last position and logits = W_U h (+ b), a head's change moves h by dh ~= J delta (J = dh/dz) and

    KL ~= 1/2 dlogits^T F dlogits = 1/2 dh^T G dh,     F = diag(p) - p p^T,   G = W_U^T F W_U  [d_model^2]

G is the Fisher information of the next-token distribution w.r.t. h; it is exact over the whole
vocabulary except that the diag(p) part keeps only the `fisher_tokens` most likely tokens (the rest carry
the tail mass, reported as `fisher_tail_mass`). Eigen-decomposing G = sum_k lam_k u_k u_k^T per prompt,

    KL_h ~= 1/2 sum_{k <= r} lam_k <grad_z (u_k . h), delta_h>^2

needs one backward pass per kept eigenvector (r = `fisher_rank`, all prompts and heads at once): the
rank-r truncation of G with the largest eigenvalues is the best r-term approximation of the quadratic
form; the captured share of trace(G) is reported as `fisher_captured`. We chose this over sampling tokens
from p (the usual Monte-Carlo Fisher): it is deterministic and needs fewer backward passes for the same
accuracy, because the spectrum of G decays fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import torch

from interp.core.errors import InterpError
from interp.core.heads import Head, HeadLike
from interp.core.progress import Progress, progress_iter
from interp.core.provenance import make_provenance
from interp.core.results import HeadScores
from interp.engine.hookpoints import FINAL_HIDDEN, v_name, z_name
from interp.engine.interventions import attributable_kinds, head_delta
from interp.engine.run import forward_with_grad, head_means, unembedding_weights
from interp.engine.sweep import SweepResult, sweep
from interp.model.loaded import LoadedModel, TokenBatch

AttributionMetric = Literal["kl", "logprob", "margin"]
ATTRIBUTION_METRICS: tuple[str, ...] = get_args(AttributionMetric)
ATTRIBUTION_KINDS = attributable_kinds()  # the kinds whose Kind class defines delta (interventions.py)


@dataclass
class Attribution:
    """Estimated ablation effect per prompt and head."""

    per_prompt: np.ndarray  # [n_prompts, n_layers, n_heads]
    seconds: float
    backward_passes: int  # per prompt chunk
    diagnostics: dict[str, float] = field(default_factory=dict)

    @property
    def scores(self) -> np.ndarray:  # [n_layers, n_heads]
        return self.per_prompt.mean(0)


# ---------------------------------------------------------------------------------------------------------
# Exact per-prompt score functions for the same metrics (for sweep / screen-then-verify)
# ---------------------------------------------------------------------------------------------------------
def kl_score(base: torch.Tensor, ablated: torch.Tensor) -> torch.Tensor:
    """KL(base || ablated) per row, natural log; [rows, d_vocab] log-probs -> [rows]."""
    return (base.exp() * (base - ablated)).sum(-1)


def logprob_score(base: torch.Tensor, ablated: torch.Tensor) -> torch.Tensor:
    """Change of the log-prob of the base model's top-1 token: [rows, d_vocab] log-probs -> [rows]."""
    top = base.argmax(-1, keepdim=True)
    return (ablated.gather(-1, top) - base.gather(-1, top))[:, 0]


def margin_score(base: torch.Tensor, ablated: torch.Tensor) -> torch.Tensor:
    """Change of logit(top-1) - logit(top-2) of the base prediction (log-softmax cancels in a difference)."""
    top = base.topk(2, dim=-1).indices
    diff = lambda lp: lp.gather(-1, top[:, :1])[:, 0] - lp.gather(-1, top[:, 1:])[:, 0]  # noqa: E731
    return diff(ablated) - diff(base)


EXACT_SCORES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "kl": kl_score,
    "logprob": logprob_score,
    "margin": margin_score,
}


# ---------------------------------------------------------------------------------------------------------
# The estimate
# ---------------------------------------------------------------------------------------------------------
def _fisher_directions(
    model: LoadedModel, logits: torch.Tensor, rank: int, n_tokens: int
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Top eigenpairs of G = W_U^T (diag p - p p^T) W_U per prompt: lam [batch, r], u [batch, r, d_model]."""
    w, _ = unembedding_weights(model)  # [d_vocab, d_model]
    w = w.float()
    p = torch.softmax(logits.detach().float(), -1)  # [batch, d_vocab]
    k = min(n_tokens, p.shape[-1])
    top_p, top_i = p.topk(k, dim=-1)  # [batch, k]
    rows = w[top_i] * top_p.sqrt()[..., None]  # [batch, k, d_model]
    mu = p @ w.to(p.device)  # [batch, d_model], exact over the vocabulary
    g = rows.transpose(1, 2) @ rows - mu[:, :, None] * mu[:, None, :]  # [batch, d_model, d_model]
    lam, vec = torch.linalg.eigh(g.double())  # ascending
    lam, vec = lam.flip(-1)[:, :rank].float(), vec.flip(-1)[:, :, :rank].float()
    trace = torch.diagonal(g, dim1=1, dim2=2).sum(-1).clamp_min(1e-30)
    info = {
        "fisher_captured": float((lam.clamp_min(0).sum(-1) / trace).mean()),
        "fisher_tail_mass": float((1 - top_p.sum(-1)).mean()),
    }
    return lam.clamp_min(0), vec.transpose(1, 2), info  # u: [batch, r, d_model]


def _backward(outputs: torch.Tensor, inputs: list[torch.Tensor], directions: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of <direction_k, outputs> for each k: directions [r, *outputs.shape] -> per input [r, *input]."""
    try:
        return list(torch.autograd.grad(outputs, inputs, directions, retain_graph=True, is_grads_batched=True))
    except RuntimeError:  # an op without a batching rule: one backward pass per direction
        per = [torch.autograd.grad(outputs, inputs, d, retain_graph=True) for d in directions]
        return [torch.stack([g[i] for g in per]) for i in range(len(inputs))]


def _attribute_chunk(
    model: LoadedModel,
    batch: TokenBatch,
    metric: str,
    kind: str,
    alpha: float,
    means: torch.Tensor | None,
    rank: int,
    n_tokens: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """[batch, n_layers, n_heads] estimates for one chunk of prompts."""
    n_layers = model.n_layers
    deltas: dict[int, torch.Tensor] = {}
    zs: dict[int, torch.Tensor] = {}
    vs: dict[int, torch.Tensor] = {}
    final: dict[str, torch.Tensor] = {}

    def add_leaf(z: torch.Tensor, hook: object, layer: int) -> torch.Tensor:
        # A zero leaf added to z: d(out)/d(leaf) is d(out)/dz, while the graph above stays intact.
        zs[layer] = z.detach()
        deltas[layer] = torch.zeros_like(z, requires_grad=True)
        return z + deltas[layer]

    def keep_v(v: torch.Tensor, hook: object, layer: int) -> None:
        vs[layer] = v.detach()

    def keep_final(h: torch.Tensor, hook: object) -> None:
        final["h"] = h[:, -1]

    hooks: list = [(z_name(layer), lambda z, hook, _l=layer: add_leaf(z, hook, _l)) for layer in range(n_layers)]
    if kind == "uniform":
        hooks += [(v_name(layer), lambda v, hook, _l=layer: keep_v(v, hook, _l)) for layer in range(n_layers)]
    if metric == "kl":
        hooks.append((FINAL_HIDDEN, keep_final))
    logits = forward_with_grad(model, batch, hooks)  # [batch, d_vocab]
    leaves = [deltas[layer] for layer in range(n_layers)]
    mask = batch.attention_mask
    change = [
        head_delta(kind, zs[layer], vs.get(layer), mask, alpha, None if means is None else means[layer])
        for layer in range(n_layers)
    ]  # per layer [batch, pos, n_heads, d_head]
    info: dict[str, float] = {}
    if metric == "kl":
        lam, u, info = _fisher_directions(model, logits, rank, n_tokens)
        grads = _backward(final["h"], leaves, u.transpose(0, 1).to(final["h"]))  # per layer [r, batch, ...]
        # <grad_k, delta> per direction, prompt and head, then 1/2 sum_k lam_k (.)^2.
        # One layer at a time, moved to the CPU (with a device map the layers live on different devices).
        proj = torch.stack([(g * c[None]).sum((2, 4)).cpu() for g, c in zip(grads, change, strict=True)])  # [L,r,B,H]
        est = 0.5 * (lam.T.cpu()[None, :, :, None] * proj.double() ** 2).sum(1)  # [L, B, H]
    else:
        lp = torch.log_softmax(logits, -1)
        top = lp.detach().topk(2, dim=-1).indices
        m = lp.gather(-1, top[:, :1])[:, 0]
        if metric == "margin":
            m = m - lp.gather(-1, top[:, 1:])[:, 0]
        grads = torch.autograd.grad(m.sum(), leaves)
        est = torch.stack([(g * c).sum((1, 3)).cpu() for g, c in zip(grads, change, strict=True)]).double()
    return est.permute(1, 0, 2).detach().cpu(), info


def attribute(
    model: LoadedModel,
    prompts: Sequence[str] | TokenBatch,
    *,
    metric: str = "kl",
    kind: str = "zero",
    alpha: float | None = None,
    reference: Sequence[str] | None = None,
    template: str = "auto",
    batch_size: int = 8,
    fisher_rank: int = 8,
    fisher_tokens: int = 512,
    progress: Progress = False,
) -> Attribution:
    """Estimated effect of ablating each head, for every head, from one forward and a few backward passes.

    metric: "kl" (second order, Fisher), "logprob" or "margin" (first order); see the module doc.
    kind: "zero" | "scale" (alpha) | "mean" (reference prompts, default the prompts) | "uniform".
    batch_size: prompts per pass. fisher_rank: backward passes per chunk for "kl".
    """
    if metric not in ATTRIBUTION_METRICS:
        raise InterpError(f"Unknown attribution metric {metric!r}; choose one of: {', '.join(ATTRIBUTION_METRICS)}.")
    if kind not in ATTRIBUTION_KINDS:
        raise InterpError(
            f"Attribution supports ablation kinds {', '.join(ATTRIBUTION_KINDS)}, not {kind!r} "
            "(resample patches another prompt's outputs: use the exact sweep)."
        )
    if kind == "scale" and alpha is None:
        raise InterpError('"scale" needs alpha (0 ablates, > 1 reinforces).')
    for name, value in (("batch_size", batch_size), ("fisher_rank", fisher_rank), ("fisher_tokens", fisher_tokens)):
        if value < 1:
            raise InterpError(f"{name} must be >= 1, got {value}.")
    start = time.perf_counter()
    batch = prompts if isinstance(prompts, TokenBatch) else model.tokenize(prompts, template)
    means = None
    if kind == "mean":
        means = head_means(model, model.tokenize(reference, template) if reference else batch)
    rank = min(fisher_rank, model.d_model)
    chunks = [list(range(i, min(i + batch_size, len(batch)))) for i in range(0, len(batch), batch_size)]
    parts, infos = [], []
    for idx in progress_iter(chunks, progress, desc="attribution", total=len(chunks)):
        sub = batch.select(idx)
        width = int(sub.lengths.max())  # drop padding no prompt of the chunk needs
        sub = TokenBatch(sub.input_ids[:, -width:], sub.attention_mask[:, -width:], sub.texts, sub.template)
        est, info = _attribute_chunk(model, sub, metric, kind, float(alpha or 0.0), means, rank, fisher_tokens)
        parts.append(est)
        infos.append(info)
    diagnostics = {k: float(np.mean([i[k] for i in infos])) for k in infos[0]} if infos and infos[0] else {}
    return Attribution(
        torch.cat(parts).cpu().numpy(),
        time.perf_counter() - start,
        rank if metric == "kl" else 1,
        diagnostics,
    )


def top_heads(scores: np.ndarray, k: int) -> list[Head]:
    """The k heads with the largest |score| (signed linear metrics: the size of the effect counts)."""
    flat = np.nan_to_num(np.abs(scores), nan=-1.0).ravel()
    order = np.argsort(-flat, kind="stable")[:k]
    n_heads = scores.shape[1]
    return [Head(int(i // n_heads), int(i % n_heads)) for i in order]


def as_heads(model: LoadedModel, heads: Sequence[HeadLike] | None) -> list[Head]:
    return list(model.parse_heads(heads)) if heads is not None else list(model.heads())


# ---------------------------------------------------------------------------------------------------------
# Screen, then verify
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Screened:
    """Attribution for every head, exact scores for the `verified` top-k of them."""

    attribution: Attribution
    verified: list[Head]
    exact: SweepResult
    seconds: float


def screen_then_verify(
    model: LoadedModel,
    prompts: Sequence[str] | TokenBatch,
    *,
    metric: str = "kl",
    kind: str = "zero",
    alpha: float | None = None,
    eps: float = 1e-8,
    reference: Sequence[str] | None = None,
    template: str = "auto",
    top_k: int = 20,
    batch_size: int = 32,
    attribution_batch_size: int = 8,
    fisher_rank: int = 8,
    fisher_tokens: int = 512,
    checkpoint: str | None = None,
    progress: Progress = False,
) -> Screened:
    """Attribution for all heads, then the exact sweep for the top_k by |estimate|."""
    if top_k < 1:
        raise InterpError(f"top_k must be >= 1, got {top_k}.")
    start = time.perf_counter()
    batch = prompts if isinstance(prompts, TokenBatch) else model.tokenize(prompts, template)
    estimate = attribute(
        model,
        batch,
        metric=metric,
        kind=kind,
        alpha=alpha,
        reference=reference,
        template=template,
        batch_size=attribution_batch_size,
        fisher_rank=fisher_rank,
        fisher_tokens=fisher_tokens,
    )
    chosen = top_heads(estimate.scores, min(top_k, model.n_layers * model.n_heads))
    exact = sweep(
        model,
        batch,
        EXACT_SCORES[metric],
        heads=chosen,
        kind=kind,
        alpha=alpha,
        eps=eps,
        reference=reference,
        template=template,
        batch_size=batch_size,
        checkpoint=checkpoint,
        progress=progress,
    )
    return Screened(estimate, chosen, exact, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------------
# One entry point for analyzers: exact | attribution | screen -> HeadScores
# ---------------------------------------------------------------------------------------------------------
Method = Literal["exact", "attribution", "screen"]


def ablation_head_scores(
    model: LoadedModel,
    prompts: Sequence[str],
    config: Any,
    metric_name: str,
    score: str,
    progress: Progress = True,
) -> HeadScores:
    """HeadScores for an ablation metric by config.method.

    config needs: method, kind, alpha, eps, template, batch_size, resample_seed, top_k, fisher_rank,
    fisher_tokens, checkpoint, checkpoint_every (see AblationKLConfig).
    exact: the sweep. attribution: the gradient estimate for every head (extras: diagnostics).
    screen: exact scores for the top_k heads by attribution, NaN elsewhere; the attribution grid for
    every head is kept in extras["attribution"] and the verified heads in extras["verified"].
    """
    batch = model.tokenize(prompts, config.template)
    n_layers, n_heads = model.n_layers, model.n_heads
    extras: dict[str, Any] = {"method": config.method}
    if config.method == "exact":
        result = sweep(
            model,
            batch,
            EXACT_SCORES[score],
            kind=config.kind,
            alpha=config.alpha,
            eps=config.eps,
            batch_size=config.batch_size,
            resample_seed=config.resample_seed,
            checkpoint=config.checkpoint,
            checkpoint_every=config.checkpoint_every,
            progress=progress,
        )
        grid, per_prompt, seconds = (
            result.grid(n_layers, n_heads),
            result.per_prompt_grid(n_layers, n_heads),
            result.seconds,
        )
        extras["resumed_rows"] = result.resumed_rows
    elif config.method == "attribution":
        est = attribute(
            model,
            batch,
            metric=score,
            kind=config.kind,
            alpha=config.alpha,
            template=config.template,
            fisher_rank=config.fisher_rank,
            fisher_tokens=config.fisher_tokens,
            progress=progress,
        )
        grid, per_prompt, seconds = est.scores, est.per_prompt, est.seconds
        extras["diagnostics"] = est.diagnostics
    else:
        screened = screen_then_verify(
            model,
            batch,
            metric=score,
            kind=config.kind,
            alpha=config.alpha,
            eps=config.eps,
            template=config.template,
            top_k=config.top_k,
            batch_size=config.batch_size,
            fisher_rank=config.fisher_rank,
            fisher_tokens=config.fisher_tokens,
            checkpoint=config.checkpoint,
            progress=progress,
        )
        grid = screened.exact.grid(n_layers, n_heads)
        per_prompt, seconds = screened.exact.per_prompt_grid(n_layers, n_heads), screened.seconds
        extras.update(
            attribution=screened.attribution.scores.tolist(),
            verified=[h.label for h in screened.verified],
            diagnostics=screened.attribution.diagnostics,
        )
    return HeadScores(
        scores=grid,
        metric=metric_name,
        model=model.name,
        config=config.to_dict(),
        provenance=make_provenance(
            prompts,
            seed=config.resample_seed,
            template=batch.template,
            device=str(model.device),
            dtype=str(model.dtype),
            seconds=round(seconds, 3),
        ),
        per_prompt=per_prompt,
        extras=extras,
    )
