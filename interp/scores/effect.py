"""`ablation-effect`: the change of a linear readout when one head is knocked out.

score(head) = mean over prompts of m(ablated) - m(base) at the last prompt position, where m is
    logprob: the log-probability of the base model's top-1 next token, or
    margin:  logit(top-1) - logit(top-2) of the base prediction (a logit difference).
Negative scores mean the head supports the prediction. method "attribution" estimates every head to first
order from one backward pass (attribution patching); "screen" verifies the top_k by |estimate| exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from interp.models import LoadedModel
from interp.progress import Progress
from interp.results import HeadScores
from interp.scores import register_metric
from interp.scores.ablation import AblationKLConfig


@dataclass(frozen=True)
class AblationEffectConfig(AblationKLConfig):
    score: Literal["logprob", "margin"] = "logprob"
    """logprob: log p(top-1 token); margin: logit(top-1) - logit(top-2) of the base prediction."""


@register_metric(
    "ablation-effect",
    AblationEffectConfig,
    "Change of log p(top-1 token) or of the top-1/top-2 logit margin when a head is ablated (signed)",
)
def ablation_effect(
    model: LoadedModel, prompts: Sequence[str], config: AblationEffectConfig, progress: Progress = True
) -> HeadScores:
    from interp.attribution import ablation_head_scores

    return ablation_head_scores(model, prompts, config, "ablation-effect", config.score, progress)
