"""The only place that touches model internals: reading activations and intervening on heads.

Interventions act on TransformerLens hook points of the bridge:

- `blocks.{l}.attn.hook_z`  z: [batch, pos, n_heads, d_head], each head's attention-weighted values,
  the input of the output projection. zero / mean / resample / scale change a head's slice here.
- `blocks.{l}.attn.hook_q`  q: [batch, pos, n_heads, d_head]. "uniform" multiplies a head's queries by a
  tiny eps, so its attention logits are ~0 and its softmax is uniform over the causal prefix
  (the safety-heads paper's "undifferentiated attention").

Every kind is one mechanism: per row and head, z' = z * mul + add (mul = 0 and add = a value for
zero/mean/resample, mul = alpha for scale) and q' = q * q_mul. The tensors carry a batch dimension, so
different rows of one batch can carry different interventions: a sweep over many heads is a few batched
passes instead of one pass per head.

Grouped-query attention (several query heads share one K/V head): z and q are per *query* head, so every
intervention here touches exactly one query head and never the shared K/V projections. (Scaling values
instead would hit every query head in the K/V group; we do not offer that route.)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch

from interp.errors import InterpError
from interp.heads import Head, HeadLike

if TYPE_CHECKING:
    from interp.models import LoadedModel, TokenBatch

InterventionKind = Literal["zero", "mean", "resample", "uniform", "scale"]
KINDS: tuple[str, ...] = get_args(InterventionKind)


def z_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def q_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_q"


def pattern_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


FINAL_HIDDEN = "ln_final.hook_out"  # [batch, pos, d_model], the normalized final residual


# ---------------------------------------------------------------------------------------------------------
# What to do to which heads
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class HeadIntervention:
    """One intervention on a set of heads.

    kind: "zero" | "mean" | "resample" | "uniform" | "scale".
    alpha: the factor for "scale" (0 ablates, > 1 reinforces).
    eps: the query factor for "uniform".
    values: for "mean", [n_layers, n_heads, d_head] head means; for "resample",
        [n_layers, src_pos, n_heads, d_head] head outputs on the source prompt (use `make_intervention`).
    """

    heads: tuple[Head, ...]
    kind: InterventionKind = "zero"
    alpha: float = 1.0
    eps: float = 1e-8
    values: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InterpError(f"Unknown intervention kind {self.kind!r}; choose one of: {', '.join(KINDS)}.")
        heads = tuple(Head(*h) for h in self.heads)
        if not heads:
            raise InterpError("An intervention needs at least one head.")
        object.__setattr__(self, "heads", heads)
        if not math.isfinite(self.alpha):
            raise InterpError(f"alpha must be a finite number, got {self.alpha}.")
        if not 0 < self.eps < 1:
            raise InterpError(f"eps must be in (0, 1), got {self.eps}.")
        expected = {"mean": 3, "resample": 4}.get(self.kind)
        if expected is not None and (self.values is None or self.values.ndim != expected):
            raise InterpError(
                f'A "{self.kind}" intervention needs values of {expected} dims; build it with make_intervention().'
            )

    def describe(self) -> str:
        detail = {"scale": f" x{self.alpha:g}", "uniform": f" (eps={self.eps:g})"}.get(self.kind, "")
        return f"{self.kind}{detail} on {','.join(h.label for h in self.heads)}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "heads": [h.label for h in self.heads]}
        if self.kind == "scale":
            out["alpha"] = self.alpha
        if self.kind == "uniform":
            out["eps"] = self.eps
        return out

    def with_heads(self, heads: Sequence[Head]) -> HeadIntervention:
        """The same kind and parameters on other heads (values are per layer/head, so they carry over)."""
        return HeadIntervention(tuple(heads), self.kind, self.alpha, self.eps, self.values)


Rows = HeadIntervention | Sequence[HeadIntervention | None] | None


def make_intervention(
    model: LoadedModel,
    heads: str | Sequence[HeadLike],
    kind: str = "zero",
    *,
    alpha: float | None = None,
    eps: float = 1e-8,
    reference: Sequence[str] | None = None,
    source: str | None = None,
    template: str = "auto",
) -> HeadIntervention:
    """Build an intervention for `model`, checking the head labels and computing mean/resample values.

    reference: prompts whose average head output "mean" ablation uses.
    source: the prompt whose head outputs "resample" ablation patches in.
    """
    if kind not in KINDS:
        raise InterpError(f"Unknown intervention kind {kind!r}; choose one of: {', '.join(KINDS)}.")
    parsed = model.parse_heads(heads)
    values = None
    if kind == "mean":
        if not reference:
            raise InterpError('"mean" ablation needs reference prompts (the set the mean is taken over).')
        values = head_means(model, model.tokenize(list(reference), template))
    elif kind == "resample":
        if not source:
            raise InterpError('"resample" ablation needs a source prompt to take the head outputs from.')
        values = head_outputs(model, model.tokenize([source], template))[:, 0]
    if kind == "scale" and alpha is None:
        raise InterpError('"scale" needs alpha (0 ablates, 1 leaves the head as is, > 1 reinforces).')
    return HeadIntervention(parsed, kind, 1.0 if alpha is None else float(alpha), eps, values)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------
# Compiling per-row interventions into per-layer tensors
# ---------------------------------------------------------------------------------------------------------
@dataclass
class _LayerPlan:
    z_mul: torch.Tensor | None = None  # [rows, n_heads]
    z_add: torch.Tensor | None = None  # [rows, pos or 1, n_heads, d_head]
    z_add_last: torch.Tensor | None = None  # [rows, 1, n_heads, d_head]: the value for decoding steps
    q_mul: torch.Tensor | None = None  # [rows, n_heads]


def _right_align(src: torch.Tensor, seq_len: int) -> torch.Tensor:
    """src: [src_pos, n_heads, d_head] -> [seq_len, n_heads, d_head], aligned at the last position.

    Prompts are left-padded, so aligning from the end pairs the last tokens. Where the source is shorter,
    the earlier positions take the source's mean output (its first token, often an attention sink with
    unusual outputs, would otherwise be smeared over them)."""
    out = src.mean(0, keepdim=True).expand(seq_len, -1, -1).clone()
    n = min(seq_len, src.shape[0])
    out[seq_len - n :] = src[src.shape[0] - n :]
    return out


def compile_rows(model: LoadedModel, rows: Rows, seq_len: int) -> dict[int, _LayerPlan]:
    """Per-layer tensors for a batch whose row i carries rows[i] (a single intervention applies to all)."""
    if rows is None:
        return {}
    row_list = [rows] if isinstance(rows, HeadIntervention) else list(rows)
    n_rows, n_heads, d_head = len(row_list), model.n_heads, model.d_head
    dev, dt = model.device, model.dtype
    plans: dict[int, _LayerPlan] = {}

    def plan_for(layer: int) -> _LayerPlan:
        if layer not in plans:
            plans[layer] = _LayerPlan()
        return plans[layer]

    for r, iv in enumerate(row_list):
        if iv is None:
            continue
        for head in iv.heads:
            if not (0 <= head.layer < model.n_layers and 0 <= head.head < n_heads):
                raise InterpError(f"Head {head.label} is out of range for {model.name}.")
            plan = plan_for(head.layer)
            if iv.kind == "uniform":
                if plan.q_mul is None:
                    plan.q_mul = torch.ones(n_rows, n_heads, dtype=dt)
                plan.q_mul[r, head.head] = iv.eps
                continue
            if plan.z_mul is None:
                plan.z_mul = torch.ones(n_rows, n_heads, dtype=dt)
            plan.z_mul[r, head.head] = iv.alpha if iv.kind == "scale" else 0.0
            if iv.kind in ("mean", "resample"):
                assert iv.values is not None
                if plan.z_add is None:
                    width = seq_len if any(x is not None and x.kind == "resample" for x in row_list) else 1
                    plan.z_add = torch.zeros(n_rows, width, n_heads, d_head, dtype=dt)
                    plan.z_add_last = torch.zeros(n_rows, 1, n_heads, d_head, dtype=dt)
                if iv.kind == "mean":
                    value = iv.values[head.layer, head.head].to(dt).cpu()  # [d_head]
                    plan.z_add[r, :, head.head] = value
                    plan.z_add_last[r, 0, head.head] = value  # type: ignore[index]
                else:
                    src = iv.values[head.layer].to(dt).cpu()  # [src_pos, n_heads, d_head]
                    aligned = _right_align(src[:, head.head : head.head + 1], plan.z_add.shape[1])
                    plan.z_add[r, :, head.head] = aligned[:, 0]
                    plan.z_add_last[r, 0, head.head] = src[-1, head.head]  # type: ignore[index]
    for plan in plans.values():
        for name in ("z_mul", "z_add", "z_add_last", "q_mul"):
            value = getattr(plan, name)
            if value is not None:
                setattr(plan, name, value.to(dev))
    return plans


def _rows_match(n_plan: int, n_batch: int, where: str) -> None:
    if n_plan not in (1, n_batch):
        raise InterpError(f"{where}: the intervention has {n_plan} rows but the batch has {n_batch}.")


def _z_hook(z: torch.Tensor, hook: Any, plan: _LayerPlan) -> torch.Tensor:
    # z: [batch, pos, n_heads, d_head]
    if plan.z_mul is not None:
        _rows_match(plan.z_mul.shape[0], z.shape[0], hook.name)
        # .to(z.device): with a device map, layer l may live on another GPU than the plan (a no-op otherwise).
        z = z * plan.z_mul[:, None, :, None].to(z.device)
    if plan.z_add is not None:
        add = plan.z_add
        if add.shape[1] not in (1, z.shape[1]):
            if z.shape[1] != 1:
                raise InterpError(
                    f"{hook.name}: a resample value for {add.shape[1]} positions met {z.shape[1]} positions."
                )
            add = plan.z_add_last  # one new position while decoding: past the source prompt's end
        z = z + add.to(z.device)  # type: ignore[union-attr]
    return z


def _q_hook(q: torch.Tensor, hook: Any, plan: _LayerPlan) -> torch.Tensor:
    # q: [batch, pos, n_heads, d_head]
    assert plan.q_mul is not None
    _rows_match(plan.q_mul.shape[0], q.shape[0], hook.name)
    return q * plan.q_mul[:, None, :, None].to(q.device)


def intervention_hooks(model: LoadedModel, rows: Rows, seq_len: int) -> list[tuple[str, Callable]]:
    hooks: list[tuple[str, Callable]] = []
    for layer, plan in sorted(compile_rows(model, rows, seq_len).items()):
        if plan.q_mul is not None:
            hooks.append((q_name(layer), partial(_q_hook, plan=plan)))
        if plan.z_mul is not None:
            hooks.append((z_name(layer), partial(_z_hook, plan=plan)))
    return hooks


@contextlib.contextmanager
def hooked(model: LoadedModel, fwd_hooks: Sequence[tuple[str, Callable]]) -> Iterator[None]:
    """Attach TransformerLens hooks for the duration of the block; removed also after an exception."""
    with model.bridge.hooks(fwd_hooks=list(fwd_hooks)):
        yield


@contextlib.contextmanager
def intervene(model: LoadedModel, rows: Rows, seq_len: int = 1) -> Iterator[None]:
    """Apply interventions inside the block (forward passes and `hf_model.generate` alike).

    rows: one HeadIntervention for every row, or a list with one entry (or None) per batch row.
    seq_len: the padded prompt length; only needed for "resample" (values are aligned to it).
    """
    with hooked(model, intervention_hooks(model, rows, seq_len)):
        yield


def hook_count(model: LoadedModel) -> int:
    """Forward hooks currently attached to the bridge's hook points (0 when nothing is attached)."""
    return sum(len(hp._forward_hooks) for hp in model.bridge.hook_dict.values())


# ---------------------------------------------------------------------------------------------------------
# Forward passes and reading activations
# ---------------------------------------------------------------------------------------------------------
def resid_name(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"  # [batch, pos, d_model], the residual entering block `layer`


@contextlib.contextmanager
def _layers_from(model: LoadedModel, start: int) -> Iterator[None]:
    """Run only blocks >= start: the HF model's layer list is cut for the duration of the block.

    Used with the bridge's start_at_layer, which swaps the cached residual in as block `start`'s input.
    The bridge alone would still compute (and discard) blocks 0..start-1; cutting the list skips them.
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


@torch.no_grad()
def run_last(
    model: LoadedModel,
    batch: TokenBatch,
    rows: Rows = None,
    capture: Sequence[str] = (),
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    start_layer: int = 0,
    resid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward pass with interventions; returns last-position logits [batch, d_vocab] and captures.

    Only the last position is projected to the vocabulary (logits_to_keep=1): the full [batch, pos, vocab]
    tensor would dominate time and memory for a 49k vocabulary.
    capture: hook names to store (reduced by `reduce` inside the hook when given).
    start_layer, resid: skip blocks < start_layer, feeding resid [batch, pos, d_model] (the residual
    entering block start_layer on an unintervened run) instead. Exact when no intervention sits below.
    """
    unknown = [n for n in capture if n not in model.bridge.hook_dict]
    if unknown:
        raise InterpError(f"Unknown hook point(s) {unknown}; e.g. {z_name(0)}, {pattern_name(0)}, {FINAL_HIDDEN}.")
    store: dict[str, torch.Tensor] = {}
    hooks = intervention_hooks(model, rows, batch.input_ids.shape[1])
    hooks += [(n, partial(_store, store=store, key=n, reduce=reduce)) for n in capture]
    if start_layer:
        assert resid is not None, "start_layer needs the residual entering that layer"
        kwargs = {"start_at_layer": start_layer, "position_ids": position_ids(batch.attention_mask)}
        model_input = resid
    else:
        kwargs, model_input = image_inputs(batch), batch.input_ids  # images: only on a full pass
    with hooked(model, hooks), _layers_from(model, start_layer):
        logits = model.bridge(model_input, attention_mask=batch.attention_mask, logits_to_keep=1, **kwargs)
    return logits[:, -1].float(), store


def v_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_v"  # [batch, pos, n_kv_heads, d_head]: GQA keeps one value per K/V head


@contextlib.contextmanager
def _frozen(model: LoadedModel) -> Iterator[None]:
    """Parameters need no gradient for the block, so a backward pass computes activation gradients only."""
    params = [p for p in model.hf_model.parameters() if p.requires_grad and not p.is_inference()]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def forward_with_grad(model: LoadedModel, batch: TokenBatch, fwd_hooks: Sequence[tuple[str, Callable]]) -> torch.Tensor:
    """Last-position logits [batch, d_vocab] of one pass with autograd on, for gradient-based attribution.

    Parameters are frozen during the pass, so gradients flow only to tensors the hooks make require grad
    (e.g. a zero `delta` added to hook_z); call torch.autograd.grad on the result afterwards."""
    with torch.enable_grad(), _frozen(model), hooked(model, fwd_hooks):
        logits = model.bridge(batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=1)
    return logits[:, -1].float()


def unembedding_weights(model: LoadedModel) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The unembedding: weight [d_vocab, d_model] and bias [d_vocab] or None (logits = hidden @ W.T + b)."""
    head = model.hf_model.get_output_embeddings()
    return head.weight.detach(), (head.bias.detach() if getattr(head, "bias", None) is not None else None)


# Stored under the name asked for: hook.name is the canonical name, which can differ from an alias
# such as hook_z (= attn.o.hook_in on the bridge).
def _store(t: torch.Tensor, hook: Any, store: dict[str, torch.Tensor], key: str, reduce: Callable | None) -> None:
    store[key] = (reduce(t) if reduce is not None else t).detach()


def _last(t: torch.Tensor) -> torch.Tensor:
    return t[:, -1].float()


@dataclass
class LastPosition:
    logits: torch.Tensor  # [batch, d_vocab] at the last prompt position
    hidden: torch.Tensor | None  # [batch, d_model] normalized final residual at the last position


def forward_last(model: LoadedModel, batch: TokenBatch, rows: Rows = None, hidden: bool = False) -> LastPosition:
    """Last-position logits (and normalized final hidden state) under interventions."""
    logits, store = run_last(model, batch, rows, capture=[FINAL_HIDDEN] if hidden else (), reduce=_last)
    return LastPosition(logits, store.get(FINAL_HIDDEN))


def unembed(model: LoadedModel, hidden: torch.Tensor) -> torch.Tensor:
    """Logits [batch, d_vocab] from normalized final hidden states [batch, d_model] (the FINAL_HIDDEN readout):
    the model's own output projection, so unembed(forward_last(...).hidden) equals forward_last(...).logits."""
    head = model.hf_model.get_output_embeddings()
    with torch.no_grad():  # the head's own device: with a device map it need not be the embedding's
        return head(hidden.to(device=head.weight.device, dtype=head.weight.dtype)).float()


def capture(
    model: LoadedModel,
    batch: TokenBatch,
    names: Sequence[str],
    rows: Rows = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Activations at hook points (optionally reduced inside the hook to save memory), under interventions."""
    return run_last(model, batch, rows, capture=names, reduce=reduce)[1]


def head_outputs(model: LoadedModel, batch: TokenBatch, rows: Rows = None) -> torch.Tensor:
    """z of every head: [n_layers, batch, pos, n_heads, d_head]."""
    names = [z_name(layer) for layer in range(model.n_layers)]
    acts = capture(model, batch, names, rows)
    return torch.stack([acts[n] for n in names])


def head_means(model: LoadedModel, batch: TokenBatch) -> torch.Tensor:
    """Each head's output averaged over all real (non-padding) positions of the batch: [n_layers, n_heads, d_head]."""
    z = head_outputs(model, batch)  # [n_layers, batch, pos, n_heads, d_head]
    mask = batch.attention_mask.to(z.dtype)[None, :, :, None, None]
    return (z * mask).sum((1, 2)) / mask.sum((1, 2))


# ---------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------
@torch.no_grad()
def generate(
    model: LoadedModel,
    prompts: Sequence[str] | str,
    rows: Rows = None,
    *,
    max_new_tokens: int = 64,
    template: str = "auto",
    batch_size: int = 8,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool | Callable[[int, int], None] = False,
) -> list[str]:
    """Generate continuations (greedy by default) with interventions active for the whole generation.

    rows: one intervention for all prompts, or one per prompt (None = no intervention for that prompt).
    """
    from interp.progress import progress_iter

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if max_new_tokens < 1:
        raise InterpError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    per_row = None if rows is None or isinstance(rows, HeadIntervention) else list(rows)
    if per_row is not None and len(per_row) != len(prompts):
        raise InterpError(f"{len(per_row)} interventions for {len(prompts)} prompts: give one per prompt.")
    out: list[str] = []
    starts = range(0, len(prompts), batch_size)
    for start in progress_iter(starts, progress, desc="generate", total=len(starts)):
        batch = model.tokenize(prompts[start : start + batch_size], template)
        chunk_rows = rows if per_row is None else per_row[start : start + batch_size]
        texts = generate_batch(
            model,
            batch,
            chunk_rows,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            seed=seed,
        )
        out.extend(texts)  # type: ignore[arg-type]
    return out


# ---------------------------------------------------------------------------------------------------------
# Vision-language models (issue 5): image inputs ride on an ImageBatch (see LoadedModel.tokenize_images);
# run_last passes them to the forward pass, and these helpers generate from a batch and stop a pass early.
# ---------------------------------------------------------------------------------------------------------
def image_inputs(batch: TokenBatch) -> dict[str, torch.Tensor]:
    """The processor's image tensors of an ImageBatch (pixel_values, ...); {} for a text-only batch."""
    return dict(getattr(batch, "image_inputs", None) or {})


class _StopForward(Exception):
    """Raised inside a hook to end a forward pass once everything needed has been captured."""


@torch.no_grad()
def capture_layer(
    model: LoadedModel,
    batch: TokenBatch,
    layer: int,
    rows: Rows = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    start_layer: int = 0,
    resid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """z of every head in `layer` ([batch, pos, n_heads, d_head], or `reduce`d) under interventions, and
    the residual entering `layer` ([batch, pos, d_model]).

    The pass stops right after that layer's attention, so the layers above cost nothing; with start_layer
    and resid (the residual entering start_layer, e.g. from an earlier call) the layers below are skipped
    too. VHR selects heads layer by layer this way: each layer's pass resumes where the last one stopped,
    so selecting over all layers costs about one forward pass. Exact when no intervention sits below
    start_layer that `resid` did not see."""
    if not 0 <= start_layer <= layer < model.n_layers:
        raise InterpError(f"Need 0 <= start_layer <= layer < {model.n_layers}, got {start_layer} and {layer}.")
    store: dict[str, torch.Tensor] = {}

    def keep(t: torch.Tensor, hook: Any) -> None:
        store["resid"] = t.detach()

    def grab(t: torch.Tensor, hook: Any) -> None:
        store["z"] = (reduce(t) if reduce is not None else t).detach()
        raise _StopForward

    hooks = intervention_hooks(model, rows, batch.input_ids.shape[1])
    hooks += [(resid_name(layer), keep), (z_name(layer), grab)]
    if start_layer:
        assert resid is not None, "start_layer needs the residual entering that layer"
        kwargs = {"start_at_layer": start_layer, "position_ids": position_ids(batch.attention_mask)}
        model_input = resid
    else:
        kwargs, model_input = image_inputs(batch), batch.input_ids
    with contextlib.suppress(_StopForward), hooked(model, hooks), _layers_from(model, start_layer):
        try:
            model.bridge(model_input, attention_mask=batch.attention_mask, logits_to_keep=1, **kwargs)
        finally:
            if start_layer:
                model.bridge._teardown_start_at_layer()  # the pass may end early, before the bridge clears it
    if "z" not in store or "resid" not in store:
        raise InterpError(f"{z_name(layer)} did not fire on {model.name}.")
    return store["z"], store["resid"]


@torch.no_grad()
def generate_batch(
    model: LoadedModel,
    batch: TokenBatch,
    rows: Rows = None,
    *,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    return_ids: bool = False,
) -> list[str] | tuple[list[str], torch.Tensor]:
    """Generate from an already tokenized batch (e.g. an ImageBatch) with interventions active throughout.

    Like `generate`, but the caller builds the batch, so image inputs come along. return_ids also returns
    the new token ids [batch, new] (padding after an end token)."""
    if max_new_tokens < 1:
        raise InterpError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    tok = model.tokenizer
    with intervene(model, rows, batch.input_ids.shape[1]), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kwargs: dict[str, Any] = {"do_sample": do_sample, **image_inputs(batch)}
        if do_sample:
            kwargs["temperature"] = temperature
        else:  # no sampling knobs at all, so transformers does not warn about unused ones
            kwargs.update(temperature=None, top_p=None, top_k=None)
        ids = model.hf_model.generate(
            batch.input_ids,
            attention_mask=batch.attention_mask,
            max_new_tokens=max_new_tokens,
            pad_token_id=tok.pad_token_id,
            **kwargs,
        )
    new = ids[:, batch.input_ids.shape[1] :]
    texts = tok.batch_decode(new, skip_special_tokens=True)
    return (texts, new) if return_ids else texts
