"""`ablation-kl`: how much the next-token distribution moves when one head is knocked out.

score(head) = mean over prompts of KL( p(. | prompt) || p_intervened(. | prompt) ) at the last prompt
position, natural log. The default intervention is zero ablation; any kind from interp.hooks works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from interp.config import Config, TemplateName, positive
from interp.errors import InterpError
from interp.hooks import InterventionKind
from interp.models import LoadedModel
from interp.progress import Progress
from interp.provenance import make_provenance
from interp.results import HeadScores
from interp.scores import register_metric
from interp.sweep import kl_per_prompt, sweep


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

    def check(self) -> None:
        positive("batch_size", self.batch_size)
        if not 0 < self.eps < 1:
            raise InterpError(f"eps must be in (0, 1), got {self.eps}.")


@register_metric(
    "ablation-kl",
    AblationKLConfig,
    "KL(base || intervened) of the last-position next-token distribution, per head (default: zero ablation)",
)
def ablation_kl(
    model: LoadedModel, prompts: Sequence[str], config: AblationKLConfig, progress: Progress = True
) -> HeadScores:
    batch = model.tokenize(prompts, config.template)
    result = sweep(
        model,
        batch,
        kl_per_prompt,
        kind=config.kind,
        alpha=config.alpha,
        eps=config.eps,
        batch_size=config.batch_size,
        resample_seed=config.resample_seed,
        progress=progress,
    )
    return HeadScores(
        scores=result.grid(model.n_layers, model.n_heads),
        metric="ablation-kl",
        model=model.name,
        config=config.to_dict(),
        provenance=make_provenance(
            prompts,
            seed=config.resample_seed,
            template=batch.template,
            device=str(model.device),
            dtype=str(model.dtype),
            seconds=round(result.seconds, 3),
        ),
        per_prompt=result.per_prompt_grid(model.n_layers, model.n_heads),
    )
