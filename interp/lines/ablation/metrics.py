"""`ablation-kl`: how much the next-token distribution moves when one head is knocked out.

score(head) = mean over prompts of KL( p(. | prompt) || p_intervened(. | prompt) ) at the last prompt
position, natural log. The default intervention is zero ablation; any kind from interp.engine.interventions works.

method: "exact" (the batched sweep; resumable with checkpoint=DIR), "attribution" (a second-order Fisher
estimate from gradients, every head in a few passes; see interp.engine.attribution) or "screen" (attribution for
every head, then the exact sweep for the top_k).

`ablation-effect`: the change of a linear readout when one head is knocked out.

score(head) = mean over prompts of m(ablated) - m(base) at the last prompt position, where m is
    logprob: the log-probability of the base model's top-1 next token, or
    margin:  logit(top-1) - logit(top-2) of the base prediction (a logit difference).
Negative scores mean the head supports the prediction. method "attribution" estimates every head to first
order from one backward pass (attribution patching); "screen" verifies the top_k by |estimate| exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from interp.core.config import OUTPUT_DIR, Config, TemplateName, positive
from interp.core.errors import InterpError
from interp.core.progress import Progress
from interp.core.registry import register_metric
from interp.core.results import HeadScores
from interp.engine.interventions import MAX_ALPHA, InterventionKind
from interp.model.loaded import LoadedModel


@dataclass(frozen=True)
class AblationKLConfig(Config):
    kind: InterventionKind = "zero"
    alpha: float = 0.0
    """Head output factor for kind="scale" (0 ablates, > 1 reinforces)."""
    eps: float = 1e-8
    """Query factor for kind="uniform"."""
    template: TemplateName = "auto"
    batch_size: int = 32
    resample_seed: int = 0
    method: Literal["exact", "attribution", "screen"] = "exact"
    """exact sweep, gradient attribution for every head, or attribution then exact for the top_k."""
    top_k: int = 20
    """Heads verified exactly by method="screen"."""
    fisher_rank: int = 8
    """Backward passes (Fisher eigen-directions) per prompt chunk for attribution of KL."""
    fisher_tokens: int = 512
    """Most likely tokens kept in the diagonal part of the Fisher (the tail mass is reported)."""
    checkpoint: str | None = field(default=None, metadata=OUTPUT_DIR)
    """Directory for resumable progress of the exact sweep (re-run with the same value to resume)."""
    checkpoint_every: float = 60.0
    """Seconds between checkpoint writes."""

    def check(self) -> None:
        for name in ("batch_size", "top_k", "fisher_rank", "fisher_tokens"):
            positive(name, getattr(self, name))
        if not 0 < self.eps < 1:
            raise InterpError(f"eps must be in (0, 1), got {self.eps}.")
        if abs(self.alpha) > MAX_ALPHA:  # larger factors overflow the activations: NaN scores, not an answer
            raise InterpError(f"alpha must be in [-{MAX_ALPHA:g}, {MAX_ALPHA:g}], got {self.alpha:g}.")
        if self.checkpoint_every < 0:
            raise InterpError(f"checkpoint_every must be >= 0 seconds, got {self.checkpoint_every}.")
        if self.method != "exact" and self.kind == "resample":
            raise InterpError(
                f'method="{self.method}" supports kinds zero, scale, mean, uniform; use method="exact" for resample.'
            )


@register_metric(
    "ablation-kl",
    AblationKLConfig,
    "KL(base || intervened) of the last-position next-token distribution, per head (default: zero ablation)",
)
def ablation_kl(
    model: LoadedModel, prompts: Sequence[str], config: AblationKLConfig, progress: Progress = True
) -> HeadScores:
    from interp.engine.attribution import ablation_head_scores

    return ablation_head_scores(model, prompts, config, "ablation-kl", "kl", progress)


@dataclass(frozen=True)
class AblationEffectConfig(AblationKLConfig):
    score: Literal["logprob", "margin"] = "logprob"
    """logprob: log p(top-1 token); margin: logit(top-1) - logit(top-2) of the base prediction."""


@register_metric(
    "ablation-effect",
    AblationEffectConfig,
    "Change of log p(top-1 token) or of the top-1/top-2 logit margin when a head is ablated "
    "(signed; most negative first)",
    direction="low",
)
def ablation_effect(
    model: LoadedModel, prompts: Sequence[str], config: AblationEffectConfig, progress: Progress = True
) -> HeadScores:
    from interp.engine.attribution import ablation_head_scores

    return ablation_head_scores(model, prompts, config, "ablation-effect", config.score, progress)
