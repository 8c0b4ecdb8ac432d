"""Interventions on attention heads: ONE definition per kind, and how a batch of them is applied.

Every kind acts on a TransformerLens hook point of the bridge:

- `blocks.{l}.attn.hook_z`  z: [batch, pos, n_heads, d_head], each head's attention-weighted values,
  the input of the output projection. zero / mean / resample / scale change a head's slice here.
- `blocks.{l}.attn.hook_q`  q: [batch, pos, n_heads, d_head]. "uniform" multiplies a head's queries by a
  tiny eps, so its attention logits are ~0 and its softmax is uniform over the causal prefix
  (the safety-heads paper's "undifferentiated attention").

Every kind is one mechanism: per row and head, z' = z * mul + add (mul = 0 and add = a value for
zero/mean/resample, mul = alpha for scale) and q' = q * q_mul. The tensors carry a batch dimension, so
different rows of one batch can carry different interventions: a sweep over many heads is a few batched
passes instead of one pass per head.

Each kind is a small class below (`Kind`): its hook form (`z_mul`, `z_add`, `q_mul`) and its attribution
delta (`delta` = z_ablated - z, used by interp.engine.attribution). Adding a kind is one class here, its name in
`InterventionKind`, and its tests (docs/architecture.md shows one).

Grouped-query attention (several query heads share one K/V head): z and q are per *query* head, so every
intervention here touches exactly one query head and never the shared K/V projections. (Scaling values
instead would hit every query head in the K/V group; we do not offer that route.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import torch

from interp.core import validate
from interp.core.errors import HeadLabelError, InterpError, UsageError
from interp.core.heads import Head, parse_head
from interp.engine.hookpoints import hooked, q_name, z_name
from interp.model.adopt import ModelLike, as_loaded_model

if TYPE_CHECKING:
    from interp.model import LoadedModel

InterventionKind = Literal["zero", "mean", "resample", "uniform", "scale"]
# The largest |alpha| for "scale": head outputs are O(1-100), so beyond this float32 / bfloat16 activations
# overflow to inf and every score turns NaN. Reinforcing factors in the literature are 1-10.
MAX_ALPHA = 1e6
Positions = Literal["all", "last"]


# ---------------------------------------------------------------------------------------------------------
# The kinds
# ---------------------------------------------------------------------------------------------------------
class Kind:
    """What one intervention kind does to one head.

    site: "z" (the head's output) or "q" (its queries).
    needs: what `make_intervention` must compute the kind's values from: None, "reference" (prompts whose
        mean head output is patched in) or "source" (a prompt whose head outputs are patched in).
    values_ndim: the dims of HeadIntervention.values the kind needs (None: no values).
    attributable: whether `delta` exists (attribution screening supports the kind).
    """

    name: ClassVar[str]
    site: ClassVar[Literal["z", "q"]] = "z"
    needs: ClassVar[Literal["reference", "source"] | None] = None
    values_ndim: ClassVar[int | None] = None
    attributable: ClassVar[bool] = True

    def z_mul(self, iv: HeadIntervention) -> float:
        """The factor on the head's z (site "z")."""
        return 0.0

    def z_add(self, iv: HeadIntervention, head: Head, width: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """What is added to the head's z after the factor: ([width or 1, d_head] for the prompt positions,
        [d_head] for decoding steps), or None."""
        return None

    def q_mul(self, iv: HeadIntervention) -> float:
        """The factor on the head's queries (site "q")."""
        raise NotImplementedError

    def delta(
        self,
        z: torch.Tensor,
        v: torch.Tensor | None,
        mask: torch.Tensor,
        *,
        alpha: float = 0.0,
        mean: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """z_ablated - z for every head of one layer (before masking padding).

        z: [batch, pos, n_heads, d_head]; v: [batch, pos, n_kv_heads, d_head]; mask: [batch, pos];
        alpha: the intervention's alpha; mean: [n_heads, d_head] (kinds with needs="reference")."""
        raise InterpError(f'Attribution does not support the "{self.name}" kind.')

    def params(self, iv: HeadIntervention) -> dict[str, Any]:
        """The parameters that describe this kind's effect (recorded in results and shown to users)."""
        return {}

    def detail(self, iv: HeadIntervention) -> str:
        return ""


_KINDS: dict[str, Kind] = {}


def register_kind(cls: type[Kind]) -> type[Kind]:
    """Add a kind (a duplicate name is refused: one definition per kind)."""
    if cls.name in _KINDS:
        raise InterpError(f"An intervention kind named {cls.name!r} is already registered.")
    _KINDS[cls.name] = cls()
    return cls


def get_kind(name: str) -> Kind:
    if name not in _KINDS:
        raise UsageError(f"Unknown intervention kind {name!r}; choose one of: {', '.join(_KINDS)}.")
    return _KINDS[name]


def attributable_kinds() -> tuple[str, ...]:
    return tuple(n for n, k in _KINDS.items() if k.attributable)


@register_kind
class Zero(Kind):
    """The head's output is set to 0."""

    name = "zero"

    def delta(self, z, v, mask, *, alpha=0.0, mean=None):
        return -z


@register_kind
class Mean(Kind):
    """The head's output is replaced by its mean over every token of a reference prompt set."""

    name = "mean"
    needs = "reference"
    values_ndim = 3  # [n_layers, n_heads, d_head]

    def z_add(self, iv, head, width):
        value = iv.values[head.layer, head.head]  # [d_head]
        return value[None], value

    def delta(self, z, v, mask, *, alpha=0.0, mean=None):
        if mean is None:
            raise InterpError('"mean" attribution needs the head means.')
        return mean.to(z)[None, None] - z


def right_align(src: torch.Tensor, seq_len: int) -> torch.Tensor:
    """src: [src_pos, ...] -> [seq_len, ...], aligned at the last position.

    Prompts are left-padded, so aligning from the end pairs the last tokens. Where the source is shorter,
    the earlier positions take the source's mean output (its first token, often an attention sink with
    unusual outputs, would otherwise be smeared over them)."""
    out = src.mean(0, keepdim=True).expand(seq_len, *src.shape[1:]).clone()
    n = min(seq_len, src.shape[0])
    out[seq_len - n :] = src[src.shape[0] - n :]
    return out


@register_kind
class Resample(Kind):
    """The head's output is replaced by its output on another prompt (aligned at the last token)."""

    name = "resample"
    needs = "source"
    values_ndim = 4  # [n_layers, src_pos, n_heads, d_head]
    attributable = False  # the patched value depends on position alignment per prompt pair

    def z_add(self, iv, head, width):
        src = iv.values[head.layer][:, head.head]  # [src_pos, d_head]
        return right_align(src, width), src[-1]


@register_kind
class Uniform(Kind):
    """The head's queries are multiplied by eps: its attention is uniform over the causal prefix."""

    name = "uniform"
    site = "q"

    def q_mul(self, iv):
        return iv.eps

    def delta(self, z, v, mask, *, alpha=0.0, mean=None):
        # The eps -> 0 limit: uniform causal attention over real tokens outputs the running mean of the
        # values a query head reads, those of its K/V group v[:, :, h // group_size]. O(eps) from eps=1e-8.
        if v is None:
            raise InterpError('"uniform" attribution needs the value vectors.')
        group = z.shape[2] // v.shape[2]
        v = v.repeat_interleave(group, dim=2)
        m = mask.to(device=v.device, dtype=v.dtype)[:, :, None, None]
        return (v * m).cumsum(1) / m.cumsum(1).clamp_min(1.0) - z

    def params(self, iv):
        return {"eps": iv.eps}

    def detail(self, iv):
        return f" (eps={iv.eps:g})"


@register_kind
class Scale(Kind):
    """The head's output is multiplied by alpha (0 ablates, > 1 reinforces)."""

    name = "scale"

    def z_mul(self, iv):
        return iv.alpha

    def delta(self, z, v, mask, *, alpha=0.0, mean=None):
        return (alpha - 1.0) * z

    def params(self, iv):
        return {"alpha": iv.alpha}

    def detail(self, iv):
        return f" x{iv.alpha:g}"


KINDS: tuple[str, ...] = get_args(InterventionKind)
assert set(KINDS) == set(_KINDS), "InterventionKind must list exactly the registered kinds"


# ---------------------------------------------------------------------------------------------------------
# What to do to which heads
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class HeadIntervention:
    """One intervention on a set of heads.

    kind: a registered kind ("zero" | "mean" | "resample" | "uniform" | "scale").
    alpha: the factor for "scale" (0 ablates, > 1 reinforces).
    eps: the query factor for "uniform".
    values: for "mean", [n_layers, n_heads, d_head] head means; for "resample",
        [n_layers, src_pos, n_heads, d_head] head outputs on the source prompt (use `make_intervention`).
    positions: "all" changes every position of every pass; "last" changes only the last position of a
        multi-position pass (the prompt's prefill) and the one position of each cached decoding step, i.e.
        exactly the positions that predict a token (VHR as the paper defines it, per generation step).
        Prompts are left-padded, so the last position is the last real token of every row.
    """

    heads: tuple[Head, ...]
    kind: InterventionKind = "zero"
    alpha: float = 1.0
    eps: float = 1e-8
    values: torch.Tensor | None = None
    positions: Positions = "all"

    def __post_init__(self) -> None:
        spec = get_kind(self.kind)
        if isinstance(self.heads, str | Head) or not isinstance(self.heads, Iterable):
            raise HeadLabelError(
                f"heads must be a tuple of heads, got {self.heads!r}; parse labels with parse_heads()."
            )
        heads = tuple(parse_head(h) for h in self.heads)
        if not heads:
            raise InterpError("An intervention needs at least one head.")
        object.__setattr__(self, "heads", heads)
        # Numbers, finite and in range: "0.1" or True would fail (or mean 1) deep inside a forward pass, and
        # a factor like 1e38 overflows the activations, leaving NaN scores that read as "not scored".
        alpha = validate.number("alpha", self.alpha, minimum=-MAX_ALPHA, maximum=MAX_ALPHA)
        eps = validate.number("eps", self.eps, minimum=0, maximum=1, min_open=True, max_open=True)
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "eps", eps)
        if self.positions not in ("all", "last"):
            raise InterpError(f'positions must be "all" or "last", got {self.positions!r}.')
        expected = spec.values_ndim
        if expected is not None and (self.values is None or self.values.ndim != expected):
            raise InterpError(
                f'A "{self.kind}" intervention needs values of {expected} dims; build it with make_intervention().'
            )

    @property
    def spec(self) -> Kind:
        return get_kind(self.kind)

    def describe(self) -> str:
        where = " (last position only)" if self.positions == "last" else ""
        return f"{self.kind}{self.spec.detail(self)} on {','.join(h.label for h in self.heads)}{where}"

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "heads": [h.label for h in self.heads], **self.spec.params(self)}
        return out | ({"positions": "last"} if self.positions == "last" else {})

    def with_heads(self, heads: Sequence[Head]) -> HeadIntervention:
        """The same kind and parameters on other heads (values are per layer/head, so they carry over)."""
        return HeadIntervention(tuple(heads), self.kind, self.alpha, self.eps, self.values, self.positions)


Rows = HeadIntervention | Sequence[HeadIntervention | None] | None


# ---------------------------------------------------------------------------------------------------------
# Compiling per-row interventions into per-layer tensors
# ---------------------------------------------------------------------------------------------------------
@dataclass
class _LayerPlan:
    z_mul: torch.Tensor | None = None  # [rows, n_heads]
    z_add: torch.Tensor | None = None  # [rows, pos or 1, n_heads, d_head]
    z_add_last: torch.Tensor | None = None  # [rows, 1, n_heads, d_head]: the value for decoding steps
    q_mul: torch.Tensor | None = None  # [rows, n_heads]
    last_only: torch.Tensor | None = None  # [rows] bool: rows whose change applies at the last position only


def compile_rows(model: LoadedModel, rows: Rows, seq_len: int) -> dict[int, _LayerPlan]:
    """Per-layer tensors for a batch whose row i carries rows[i] (a single intervention applies to all)."""
    if rows is None:
        return {}
    row_list = [rows] if isinstance(rows, HeadIntervention) else list(rows)
    n_rows, n_heads, d_head = len(row_list), model.n_heads, model.d_head
    dt = model.dtype
    # Position-wise values (resample) need the full prompt width; constant ones (mean) broadcast over it.
    width = seq_len if any(x is not None and x.kind == "resample" for x in row_list) else 1
    plans: dict[int, _LayerPlan] = {}
    for r, iv in enumerate(row_list):
        if iv is None:
            continue
        spec = iv.spec
        for head in iv.heads:
            if not (0 <= head.layer < model.n_layers and 0 <= head.head < n_heads):
                raise InterpError(f"Head {head.label} is out of range for {model.name}.")
            plan = plans.setdefault(head.layer, _LayerPlan())
            if iv.positions == "last":
                if plan.last_only is None:
                    plan.last_only = torch.zeros(n_rows, dtype=torch.bool)
                plan.last_only[r] = True
            if spec.site == "q":
                if plan.q_mul is None:
                    plan.q_mul = torch.ones(n_rows, n_heads, dtype=dt)
                plan.q_mul[r, head.head] = spec.q_mul(iv)
                continue
            if plan.z_mul is None:
                plan.z_mul = torch.ones(n_rows, n_heads, dtype=dt)
            plan.z_mul[r, head.head] = spec.z_mul(iv)
            added = spec.z_add(iv, head, width)
            if added is not None:
                if plan.z_add is None:
                    plan.z_add = torch.zeros(n_rows, width, n_heads, d_head, dtype=dt)
                    plan.z_add_last = torch.zeros(n_rows, 1, n_heads, d_head, dtype=dt)
                prompt_value, decode_value = added
                plan.z_add[r, :, head.head] = prompt_value.to(dt).cpu()
                plan.z_add_last[r, 0, head.head] = decode_value.to(dt).cpu()  # type: ignore[index]
    for plan in plans.values():
        for name in ("z_mul", "z_add", "z_add_last", "q_mul", "last_only"):
            value = getattr(plan, name)
            if value is not None:
                setattr(plan, name, value.to(model.device))
    return plans


def _rows_match(n_plan: int, n_batch: int, where: str) -> None:
    if n_plan not in (1, n_batch):
        raise InterpError(f"{where}: the intervention has {n_plan} rows but the batch has {n_batch}.")


def _keep_earlier(new: torch.Tensor, old: torch.Tensor, plan: _LayerPlan) -> torch.Tensor:
    """Undo the change before the last position in rows marked last_only (positions="last")."""
    if plan.last_only is None or new.shape[1] == 1:
        return new  # one position: a decoding step, which predicts a token
    keep = plan.last_only.to(new.device)[:, None].expand(-1, new.shape[1]).clone()  # [rows, pos]
    keep[:, -1] = False
    return torch.where(keep[:, :, None, None], old, new)


def _z_hook(z: torch.Tensor, hook: Any, plan: _LayerPlan) -> torch.Tensor:
    # z: [batch, pos, n_heads, d_head]
    return _keep_earlier(_z_change(z, hook, plan), z, plan)


def _z_change(z: torch.Tensor, hook: Any, plan: _LayerPlan) -> torch.Tensor:
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
    return _keep_earlier(q * plan.q_mul[:, None, :, None].to(q.device), q, plan)


def intervention_hooks(model: LoadedModel, rows: Rows, seq_len: int) -> list[tuple[str, Callable]]:
    hooks: list[tuple[str, Callable]] = []
    for layer, plan in sorted(compile_rows(model, rows, seq_len).items()):
        if plan.q_mul is not None:
            hooks.append((q_name(layer), partial(_q_hook, plan=plan)))
        if plan.z_mul is not None:
            hooks.append((z_name(layer), partial(_z_hook, plan=plan)))
    return hooks


@contextlib.contextmanager
def intervene(model: ModelLike, rows: Rows, seq_len: int = 1) -> Iterator[None]:
    """Apply interventions inside the block (forward passes and `hf_model.generate` alike).

    model: a LoadedModel, a TransformerBridge, or (hf_model, tokenizer): the hooks go on its bridge, so they
    act on `bridge(...)` and on the HF model's own forward / generate (the bridge's components sit inside it).

    rows: one HeadIntervention for every row, or a list with one entry (or None) per batch row.
    seq_len: the padded prompt length; only needed for "resample" (values are aligned to it).
    """
    model = as_loaded_model(model)
    with hooked(model, intervention_hooks(model, rows, seq_len)):
        yield


def head_delta(
    kind: str,
    z: torch.Tensor,
    v: torch.Tensor | None,
    mask: torch.Tensor,
    alpha: float = 0.0,
    mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """delta = z_ablated - z for every head of one layer, zero at padding (attribution's input).

    z: [batch, pos, n_heads, d_head]; v: [batch, pos, n_kv_heads, d_head] (uniform only);
    mask: [batch, pos] (1 = real token); mean: [n_heads, d_head] (mean only)."""
    k = get_kind(kind)
    if not k.attributable:
        raise InterpError(f"Attribution supports kinds {', '.join(attributable_kinds())}; got {kind!r}.")
    delta = k.delta(z, v, mask, alpha=alpha, mean=mean)
    return delta * mask.to(device=z.device, dtype=z.dtype)[:, :, None, None]
