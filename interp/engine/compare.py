"""What an intervention changes: base vs intervened generation and the next-token distribution.

Shared by the CLI (`interp ablate`) and the app's intervention playground.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from interp.core import validate
from interp.engine.interventions import HeadIntervention
from interp.engine.run import forward_last, generate
from interp.model.loaded import LoadedModel


def show_token(text: str) -> str:
    """A token made visible in a label: newlines, tabs and edge spaces get symbols."""
    text = text.replace("\n", "⏎").replace("\t", "⇥")
    if text != text.strip(" "):
        text = text.replace(" ", "␣")
    return text or "∅"


def generate_pair(
    model: LoadedModel, prompt: str, intervention: HeadIntervention, max_new_tokens: int, template: str = "auto"
) -> tuple[str, str]:
    """(base, intervened) greedy generations, in one batch: row 0 untouched, row 1 under the intervention."""
    base, changed = generate(
        model, [prompt, prompt], [None, intervention], max_new_tokens=max_new_tokens, template=template
    )
    return base, changed


def next_token_table(
    model: LoadedModel, prompt: str, intervention: HeadIntervention, k: int = 10, template: str = "auto"
) -> tuple[pd.DataFrame, float]:
    """The next-token distribution before and after the intervention, and KL(base || intervened) in nats.

    Columns: rank; the base top-k tokens with their probability before and after; the intervened top-k tokens.
    """
    k = validate.integer("k (tokens shown)", k, minimum=1, maximum=model.d_vocab)
    batch = model.tokenize([prompt, prompt], template)
    logits = forward_last(model, batch, [None, intervention]).logits.cpu()  # [2, d_vocab]
    logp = torch.log_softmax(logits.double(), -1)
    p_base, p_new = logp.exp()
    kl = float((p_base * (logp[0] - logp[1])).sum())
    base_p, base_ids = p_base.topk(k)
    new_p, new_ids = p_new.topk(k)

    def tokens(ids: torch.Tensor) -> list[str]:
        return [show_token(model.tokenizer.decode([int(i)])) for i in ids]

    frame = pd.DataFrame(
        {
            "rank": np.arange(1, k + 1),
            "base token": tokens(base_ids),
            "p base": base_p.numpy(),
            "p intervened": p_new[base_ids].numpy(),
            "change": (p_new[base_ids] - base_p).numpy(),
            "intervened token": tokens(new_ids),
            "p (intervened top)": new_p.numpy(),
        }
    )
    return frame, kl
