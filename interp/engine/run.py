"""Running the model under interventions: forward passes, reading activations, generation.

`make_intervention` builds a HeadIntervention for a model (checking labels, computing mean/resample values);
`run_last` is the one forward pass everything else uses (interventions, captures, starting at a layer from a
cached residual); `generate` / `generate_batch` keep interventions active for a whole generation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from interp.core import validate
from interp.core.errors import InterpError, UsageError
from interp.core.heads import HeadLike
from interp.core.progress import progress_iter
from interp.core.prompts import check_prompts
from interp.engine.hookpoints import (
    FINAL_HIDDEN,
    hooked,
    layers_from,
    pattern_name,
    position_ids,
    resid_name,
    teardown_start_at_layer,
    z_name,
)
from interp.engine.interventions import MAX_ALPHA, HeadIntervention, Rows, get_kind, intervene, intervention_hooks
from interp.model.adopt import ModelLike, as_loaded_model

if TYPE_CHECKING:
    from interp.model import LoadedModel, TokenBatch


def make_intervention(
    model: ModelLike,
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
    model: a LoadedModel, a TransformerBridge, or (hf_model, tokenizer) (see interp.model.adopt).
    """
    model = as_loaded_model(model)
    spec = get_kind(kind)
    parsed = model.parse_heads(heads)
    if kind == "scale" and alpha is None:
        raise UsageError('"scale" needs alpha (0 ablates, 1 leaves the head as is, > 1 reinforces).')
    # Numbers and prompts are checked before any forward pass (HeadIntervention checks them again).
    alpha = 1.0 if alpha is None else validate.number("alpha", alpha, minimum=-MAX_ALPHA, maximum=MAX_ALPHA)
    eps = validate.number("eps", eps, minimum=0, maximum=1, min_open=True, max_open=True)
    values = None
    if spec.needs == "reference":
        if isinstance(reference, str):  # iterating a string would average over its characters
            raise UsageError(
                f"reference must be a list of prompts, got the string {reference!r}; pass [{reference!r}] for one "
                "prompt, or load_prompts(name_or_file) for a set."
            )
        if not reference:
            raise UsageError(f'"{kind}" ablation needs reference prompts (the set the mean is taken over).')
        values = head_means(model, model.tokenize(check_prompts(reference), template))
    elif spec.needs == "source":
        if not source:
            raise UsageError(f'"{kind}" ablation needs a source prompt to take the head outputs from.')
        if not isinstance(source, str):
            raise UsageError(f"source must be one prompt (a string), got {type(source).__name__}.")
        values = head_outputs(model, model.tokenize([source], template))[:, 0]
    return HeadIntervention(parsed, kind, alpha, eps, values)  # type: ignore[arg-type]


@dataclass
class PrefixKV:
    """The attention keys and values of a token prefix that precedes every row of a batch (a KV cache).

    keys[l], values[l]: [n or 1, n_kv_heads, length, d_head] for layer l, as the model's attention caches
    them (after rotary embeddings). A layer held as one row is shared by every row (e.g. the layers below an
    intervention); otherwise row i of the batch attends to prefix row i. A pass given a PrefixKV runs only
    the tokens after the prefix (see run_last)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        return int(self.keys[0].shape[-2])

    @property
    def n(self) -> int:
        return max(int(k.shape[0]) for k in self.keys)

    def take(self, index: Sequence[int]) -> PrefixKV:
        """Rows `index` of this prefix, in that order (may repeat). Layers held as one row stay shared."""
        idx = torch.as_tensor(list(index), dtype=torch.long)

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t if t.shape[0] == 1 else t[idx.to(t.device)]

        return PrefixKV([pick(k) for k in self.keys], [pick(v) for v in self.values])

    def cat(self, other: PrefixKV) -> PrefixKV:
        """The rows of self followed by those of other (layers that both share as the same one row stay so)."""
        n_a, n_b = self.n, other.n

        def join(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            if a is b and a.shape[0] == 1:
                return a
            return torch.cat([a.expand(n_a, -1, -1, -1), b.expand(n_b, -1, -1, -1)])

        return PrefixKV(
            [join(a, b) for a, b in zip(self.keys, other.keys, strict=True)],
            [join(a, b) for a, b in zip(self.values, other.values, strict=True)],
        )


def _layer_classes() -> tuple[type, type]:
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    return DynamicLayer, DynamicSlidingWindowLayer


def _new_cache(model: LoadedModel) -> Any:
    """An empty HF DynamicCache laid out for the model (one layer object per block)."""
    from transformers import DynamicCache

    return DynamicCache(config=model.hf_model.config)


def prefix_cache_supported(model: LoadedModel, total_length: int) -> bool:
    """Whether a token prefix can be cached and reused exactly (PrefixKV) for inputs of up to total_length
    tokens: every layer caches plain keys/values (a sliding window only when it covers every position),
    and the model is a text model (image inputs are spliced into the tokens on a full pass only)."""
    if model.is_multimodal:
        return False
    try:
        cache = _new_cache(model)
    except Exception:  # a config transformers cannot lay out a cache for: no KV-cache route
        return False
    full, sliding = _layer_classes()
    if len(cache.layers) != model.n_layers:
        return False
    for layer in cache.layers:
        if type(layer) is sliding:
            if getattr(layer, "sliding_window", 0) < total_length:
                return False
        elif type(layer) is not full:
            return False
    return True


def _kv_cache(model: LoadedModel, prefix: PrefixKV, n_rows: int) -> Any:
    """A fresh DynamicCache holding `prefix` for n_rows rows (the pass appends its own keys/values to it)."""
    cache = _new_cache(model)
    if prefix.n not in (1, n_rows):
        raise InterpError(f"A prefix of {prefix.n} rows met a batch of {n_rows} rows.")
    for layer, (k, v) in enumerate(zip(prefix.keys, prefix.values, strict=True)):
        cache.update(k.expand(n_rows, -1, -1, -1), v.expand(n_rows, -1, -1, -1), layer)
    return cache


def _forward(
    model: LoadedModel,
    batch: TokenBatch,
    rows: Rows,
    capture: Sequence[str],
    reduce: Callable[[torch.Tensor], torch.Tensor] | None,
    start_layer: int,
    resid: torch.Tensor | None,
    prefix: PrefixKV | None,
    cache: Any = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The one forward pass behind run_last and run_prefix (see there)."""
    unknown = [n for n in capture if n not in model.bridge.hook_dict]
    if unknown:
        raise InterpError(f"Unknown hook point(s) {unknown}; e.g. {z_name(0)}, {pattern_name(0)}, {FINAL_HIDDEN}.")
    store: dict[str, torch.Tensor] = {}
    hooks = intervention_hooks(model, rows, batch.input_ids.shape[1])
    hooks += [(n, partial(_store, store=store, key=n, reduce=reduce)) for n in capture]
    mask = batch.attention_mask  # [batch, pos]
    kwargs: dict[str, Any] = {}
    if prefix is not None:
        # Rows = the tokens after the prefix: the mask covers prefix + these tokens (left padding sits between
        # them, masked out), positions continue after the prefix, and attention reads the prefix from the cache.
        n = len(batch)
        kwargs["past_key_values"] = _kv_cache(model, prefix, n)
        kwargs["position_ids"] = prefix.length + position_ids(mask)
        mask = torch.cat([mask.new_ones(n, prefix.length), mask], 1)
    elif cache is not None:  # run_prefix: an unpadded prefix whose keys/values land in `cache`
        kwargs["past_key_values"] = cache
        kwargs["position_ids"] = position_ids(mask)
    if start_layer:
        assert resid is not None, "start_layer needs the residual entering that layer"
        kwargs.setdefault("position_ids", position_ids(mask))
        kwargs["start_at_layer"] = start_layer
        model_input = resid
    else:
        kwargs.update(image_inputs(batch))  # images: only on a full pass
        model_input = batch.input_ids
    with hooked(model, hooks), layers_from(model, start_layer):
        logits = model.bridge(model_input, attention_mask=mask, logits_to_keep=1, **kwargs)
    return logits[:, -1].float(), store


@torch.no_grad()
def run_last(
    model: LoadedModel,
    batch: TokenBatch,
    rows: Rows = None,
    capture: Sequence[str] = (),
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    start_layer: int = 0,
    resid: torch.Tensor | None = None,
    prefix: PrefixKV | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward pass with interventions; returns last-position logits [batch, d_vocab] and captures.

    Only the last position is projected to the vocabulary (logits_to_keep=1): the full [batch, pos, vocab]
    tensor would dominate time and memory for a 49k vocabulary.
    capture: hook names to store (reduced by `reduce` inside the hook when given).
    start_layer, resid: skip blocks < start_layer, feeding resid [batch, pos, d_model] (the residual
    entering block start_layer on an unintervened run) instead. Exact when no intervention sits below.
    prefix: the keys/values of tokens that come before every row (from run_prefix, e.g. a chat template's
    shared system prompt); `batch` then holds only the tokens after them (left-padded; captures and resid
    cover only these positions). Exact when the prefix was computed under the same interventions.
    """
    return _forward(model, batch, rows, capture, reduce, start_layer, resid, prefix)


@torch.no_grad()
def run_prefix(
    model: LoadedModel,
    batch: TokenBatch,
    rows: Rows = None,
    capture: Sequence[str] = (),
    start_layer: int = 0,
    resid: torch.Tensor | None = None,
    below: PrefixKV | None = None,
) -> tuple[PrefixKV, dict[str, torch.Tensor]]:
    """Run an unpadded token prefix [n, length] under interventions and keep its keys/values (PrefixKV) for
    later passes over what follows it (run_last(..., prefix=...)); also returns the captures.

    start_layer, resid: as in run_last; the keys/values of the skipped layers are taken from `below` (the
    same prefix's PrefixKV on the pass whose residual `resid` is; one row or n rows)."""
    if not bool(batch.attention_mask.all()):
        raise InterpError("A cached prefix must not contain padding.")
    if start_layer and (below is None or below.length != batch.input_ids.shape[1]):
        raise InterpError("run_prefix with start_layer needs the keys/values of the layers below (same prefix).")
    cache = _new_cache(model)
    _, store = _forward(model, batch, rows, capture, None, start_layer, resid, None, cache)
    keys: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    for layer in range(model.n_layers):
        if layer < start_layer:
            assert below is not None  # unchanged by this pass: kept as they are (one shared row or n rows)
            keys.append(below.keys[layer])
            values.append(below.values[layer])
        else:
            keys.append(cache.layers[layer].keys)
            values.append(cache.layers[layer].values)
    return PrefixKV(keys, values), store


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
    model: ModelLike,
    batch: TokenBatch,
    names: Sequence[str],
    rows: Rows = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Activations at hook points (optionally reduced inside the hook to save memory), under interventions."""
    return run_last(as_loaded_model(model), batch, rows, capture=names, reduce=reduce)[1]


def head_outputs(model: ModelLike, batch: TokenBatch, rows: Rows = None) -> torch.Tensor:
    """z of every head: [n_layers, batch, pos, n_heads, d_head]."""
    model = as_loaded_model(model)
    names = [z_name(layer) for layer in range(model.n_layers)]
    acts = capture(model, batch, names, rows)
    return torch.stack([acts[n] for n in names])


def head_means(model: LoadedModel, batch: TokenBatch) -> torch.Tensor:
    """Each head's output averaged over all real (non-padding) positions of the batch: [n_layers, n_heads, d_head]."""
    z = head_outputs(model, batch)  # [n_layers, batch, pos, n_heads, d_head]
    mask = batch.attention_mask.to(z.dtype)[None, :, :, None, None]
    return (z * mask).sum((1, 2)) / mask.sum((1, 2))


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
    with contextlib.suppress(_StopForward), hooked(model, hooks), layers_from(model, start_layer):
        try:
            model.bridge(model_input, attention_mask=batch.attention_mask, logits_to_keep=1, **kwargs)
        finally:
            if start_layer:
                teardown_start_at_layer(model)  # the pass may end early, before the bridge clears it
    if "z" not in store or "resid" not in store:
        raise InterpError(f"{z_name(layer)} did not fire on {model.name}.")
    return store["z"], store["resid"]


@torch.no_grad()
def generate(
    model: ModelLike,
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
    model: a LoadedModel, a TransformerBridge, or (hf_model, tokenizer) (see interp.model.adopt).
    """
    model = as_loaded_model(model)
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


@torch.no_grad()
def continuation_logprobs(
    model: LoadedModel, prompts: Sequence[str], continuations: Sequence[str], template: str = "auto"
) -> list[torch.Tensor]:
    """Per pair: the log-probabilities [n_tokens] of the continuation's tokens after the formatted prompt
    (teacher forcing, no interventions), e.g. to measure a generated response's perplexity.

    One pass per pair (no padding to get wrong); only the continuation's positions are projected to the
    vocabulary (logits_to_keep)."""
    tok = model.tokenizer
    out: list[torch.Tensor] = []
    for prompt, continuation in zip(prompts, continuations, strict=True):
        context = model.tokenize([prompt], template).input_ids[0].tolist()
        cont = tok(continuation, add_special_tokens=False)["input_ids"]
        if not cont:
            out.append(torch.zeros(0))
            continue
        ids = torch.tensor([context + cont], device=model.device)  # [1, pos]
        logits = model.bridge(ids, logits_to_keep=len(cont) + 1)[0, :-1].float()  # [n_cont, d_vocab]
        target = torch.tensor(cont, device=logits.device)[:, None]
        out.append(torch.log_softmax(logits, -1).gather(-1, target)[:, 0].cpu())
    return out
