"""`ablation-kl`: how much the next-token distribution moves when one head is knocked out.

score(head) = mean over prompts of KL( p(. | prompt) || p_intervened(. | prompt) ) at the last prompt
position, natural log. The default intervention is zero ablation; any kind from interp.hooks works.

method: "exact" (the batched sweep; resumable with checkpoint=DIR), "attribution" (a second-order Fisher
estimate from gradients, every head in a few passes; see interp.attribution) or "screen" (attribution for
every head, then the exact sweep for the top_k).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from interp.config import Config, TemplateName, positive
from interp.errors import InterpError
from interp.hooks import InterventionKind
from interp.models import LoadedModel
from interp.progress import Progress
from interp.results import HeadScores
from interp.scores import register_metric


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
    checkpoint: str | None = None
    """Directory for resumable progress of the exact sweep (re-run with the same value to resume)."""
    checkpoint_every: float = 60.0
    """Seconds between checkpoint writes."""

    def check(self) -> None:
        for name in ("batch_size", "top_k", "fisher_rank", "fisher_tokens"):
            positive(name, getattr(self, name))
        if not 0 < self.eps < 1:
            raise InterpError(f"eps must be in (0, 1), got {self.eps}.")
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
    from interp.attribution import ablation_head_scores

    return ablation_head_scores(model, prompts, config, "ablation-kl", "kl", progress)
