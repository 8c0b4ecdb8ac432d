"""`probe`: random-feature probes of every head's output, with a control and the selectivity.

For a labelled prompt set (e.g. harmful vs harmless) each head's output z (hook_z, the head's attention-weighted
values, [d_head]) is read at the last prompt position (or averaged over the prompt's positions), mapped through
a fixed random-feature map and classified by an L2-regularized logistic regression (`RandomFeatureProbe`, a
scikit-learn classifier). Every prompt is predicted by a probe that did not see it (stratified k-fold,
seeded), so

    accuracy(head)    = fraction of prompts whose label the held-out probe gets right
    control(head)     = the same on a control:
                          "random-init": the same head of a randomly initialized copy of the model (same
                                         config, fresh weights, seeded): what any network's head at that
                                         place carries about the prompts (token identity, length, ...);
                          "shuffled":    this model's head with the labels randomly permuted: probe capacity
                                         and chance level;
    selectivity(head) = accuracy - control.

Labelled prompts: a JSONL file with one {"prompt": ..., "label": ...} object per line, or a built-in pair
of prompt sets ("harmful-harmless": data/prompts/advbench.txt labelled "harmful" vs data/prompts/harmless.txt
labelled "harmless", balanced to the smaller set unless `limit` says fewer per class).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from threadpoolctl import threadpool_limits

from interp.core.config import Config, TemplateName, positive
from interp.core.errors import InterpError, PromptError, unknown_name
from interp.core.progress import Progress, progress_iter
from interp.core.prompts import check_prompts, load_prompts
from interp.core.provenance import make_provenance
from interp.core.registry import register_metric
from interp.core.results import HeadScores
from interp.engine.hookpoints import z_name
from interp.engine.run import capture
from interp.lines.rfa.estimators import RandomFeatureProbe
from interp.model.loaded import LoadedModel, TokenBatch
from interp.model.loading import random_init_copy

# name -> ((prompt set, label), ...): pairs of built-in prompt sets, one label each.
BUILTIN_LABELS: dict[str, tuple[tuple[str, str], ...]] = {
    "harmful-harmless": (("advbench", "harmful"), ("harmless", "harmless")),
}
Position = Literal["last", "mean"]
ControlKind = Literal["random-init", "shuffled"]


@dataclass(frozen=True)
class ProbeConfig(Config):
    labels: str = "harmful-harmless"
    """JSONL file of {"prompt", "label"} lines, or a built-in pair (harmful-harmless)."""
    limit: int | None = None
    """At most this many prompts per class (the first ones); None: all (built-in pairs: balanced)."""
    position: Position = "last"
    """Read each head's output at the last prompt token, or average it over the prompt's tokens."""
    control: ControlKind = "random-init"
    n_components: int = 256
    """Random features per head."""
    kernel: Literal["relu", "cos"] = "relu"
    gamma: float = 1.0
    C: float = 1.0
    """Inverse L2 strength of the logistic regression."""
    folds: int = 5
    seed: int = 0
    """Seeds the random-feature map, the fold split, the shuffled labels and the random-init copy."""
    template: TemplateName = "auto"
    batch_size: int = 16
    report: Literal["selectivity", "accuracy", "control"] = "selectivity"
    """Which grid the registered metric returns as its scores (all three are in extras)."""

    def check(self) -> None:
        positive("n_components", self.n_components)
        positive("gamma", self.gamma)
        positive("C", self.C)
        positive("batch_size", self.batch_size)
        if self.folds < 2:
            raise InterpError(f"folds must be >= 2 (held-out accuracy needs a split), got {self.folds}.")
        if self.limit is not None:
            positive("limit", self.limit)


# ---------------------------------------------------------------------------------------------------------
# Labelled prompts
# ---------------------------------------------------------------------------------------------------------
def load_labelled(source: str | Path, limit: int | None = None) -> tuple[list[str], list[str]]:
    """(prompts, labels) from a JSONL file or a built-in pair; labels are returned as strings."""
    name = str(source)
    if name in BUILTIN_LABELS:
        sets = [(load_prompts(prompt_set), label) for prompt_set, label in BUILTIN_LABELS[name]]
        per_class = min(len(p) for p, _ in sets) if limit is None else limit
        prompts = [p for ps, _ in sets for p in ps[:per_class]]
        labels = [label for ps, label in sets for _ in ps[:per_class]]
        return prompts, labels
    path = Path(source)
    if not path.is_file():
        if path.suffix or "/" in name:
            raise PromptError(f"Labels file {path} does not exist.")
        raise unknown_name("labelled prompt set", name, BUILTIN_LABELS)
    prompts, labels = _read_jsonl(path)
    if limit is not None:  # the first `limit` prompts of each class, in file order
        seen: Counter[str] = Counter()
        keep = []
        for i, label in enumerate(labels):
            seen[label] += 1
            if seen[label] <= limit:
                keep.append(i)
        prompts, labels = [prompts[i] for i in keep], [labels[i] for i in keep]
    return prompts, labels


def _read_jsonl(path: Path) -> tuple[list[str], list[str]]:
    prompts, labels = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise PromptError(f"Labels file {path} is not UTF-8 text: {exc}") from exc
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptError(f"{path}, line {i}: not valid JSON ({exc.msg}).") from exc
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or "label" not in record:
            raise PromptError(f'{path}, line {i}: expected an object with a string "prompt" and a "label".')
        label = record["label"]
        if not isinstance(label, str | int | bool) or (isinstance(label, str) and not label.strip()):
            raise PromptError(f'{path}, line {i}: "label" must be a non-empty string, an integer or a boolean.')
        prompts.append(record["prompt"])
        labels.append(str(label).lower() if isinstance(label, bool) else str(label))
    if not prompts:
        raise PromptError(f'Labels file {path} holds no examples: write JSONL lines {{"prompt": ..., "label": ...}}.')
    return prompts, labels


def check_labels(prompts: Sequence[str], labels: Sequence[Any], folds: int) -> np.ndarray:
    """Labels as an array, after checking there are >= 2 classes with >= folds examples each."""
    check_prompts(prompts)
    if len(labels) != len(prompts):
        raise InterpError(f"{len(labels)} labels for {len(prompts)} prompts: give one label per prompt.")
    counts = Counter(map(str, labels))
    if len(counts) < 2:
        raise InterpError(f"A probe needs at least two classes; all {len(labels)} prompts are labelled {labels[0]!r}.")
    small = {k: v for k, v in counts.items() if v < folds}
    if small:
        raise InterpError(
            f"Every class needs at least folds={folds} prompts for a held-out split; too few: {small}. "
            "Add prompts or lower folds."
        )
    return np.asarray([str(label) for label in labels])


# ---------------------------------------------------------------------------------------------------------
# Head outputs
# ---------------------------------------------------------------------------------------------------------
def _reducer(batch: TokenBatch, position: Position):  # type: ignore[no-untyped-def]
    """Reduce z [batch, pos, n_heads, d_head] inside the hook to [batch, n_heads, d_head]."""
    if position == "last":
        return lambda z: z[:, -1].float()
    mask = batch.attention_mask.float()[:, :, None, None]  # [batch, pos, 1, 1], 1 = real token (left padding)
    return lambda z: (z.float() * mask).sum(1) / mask.sum(1)


def collect_head_outputs(
    model: LoadedModel,
    prompts: Sequence[str],
    position: Position = "last",
    template: str = "auto",
    batch_size: int = 16,
    progress: Progress = False,
) -> np.ndarray:
    """Every head's output per prompt: [n_layers, n_heads, n_prompts, d_head] float64."""
    if position not in ("last", "mean"):
        raise InterpError(f'position must be "last" or "mean", got {position!r}.')
    prompts = check_prompts(prompts)
    names = [z_name(layer) for layer in range(model.n_layers)]
    chunks = []
    starts = range(0, len(prompts), batch_size)
    for start in progress_iter(starts, progress, desc=f"head outputs ({model.name})", total=len(starts)):
        batch = model.tokenize(prompts[start : start + batch_size], template)
        acts = capture(model, batch, names, reduce=_reducer(batch, position))
        chunks.append(torch.stack([acts[n] for n in names]).cpu())  # [n_layers, batch, n_heads, d_head]
    z = torch.cat(chunks, 1)  # [n_layers, n_prompts, n_heads, d_head]
    return z.permute(0, 2, 1, 3).double().numpy()


# ---------------------------------------------------------------------------------------------------------
# Probing
# ---------------------------------------------------------------------------------------------------------
def make_probe(config: ProbeConfig) -> RandomFeatureProbe:
    return RandomFeatureProbe(config.n_components, config.kernel, config.gamma, config.C, random_state=config.seed)


def held_out_correct(features: np.ndarray, labels: np.ndarray, config: ProbeConfig) -> np.ndarray:
    """features [n_prompts, d] -> [n_prompts] 1.0 where the probe that did not see the prompt got it right."""
    folds = StratifiedKFold(config.folds, shuffle=True, random_state=config.seed)
    pred = cross_val_predict(make_probe(config), features, labels, cv=folds)
    return (pred == labels).astype(np.float64)


def probe_grid(
    outputs: np.ndarray, labels: np.ndarray, config: ProbeConfig, progress: Progress = False, desc: str = "probes"
) -> np.ndarray:
    """outputs [n_layers, n_heads, n_prompts, d_head] -> held-out correctness [n_prompts, n_layers, n_heads]."""
    n_layers, n_heads, n_prompts, _ = outputs.shape
    correct = np.zeros((n_prompts, n_layers, n_heads))
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    # The matrices are tiny ([n_prompts, n_components]): BLAS threads only add overhead here, up to ~10x on
    # a busy machine, so each probe runs single-threaded.
    with threadpool_limits(1):
        for layer, head in progress_iter(heads, progress, desc=desc, total=len(heads)):
            correct[:, layer, head] = held_out_correct(outputs[layer, head], labels, config)
    return correct


@dataclass(frozen=True)
class ProbeResult:
    """Held-out probe accuracy per head, the control, and selectivity = accuracy - control (all HeadScores)."""

    accuracy: HeadScores
    control: HeadScores
    selectivity: HeadScores

    def table(self, k: int | None = None) -> pd.DataFrame:
        """One row per head (label, accuracy, control, selectivity), highest selectivity first."""
        frame = self.selectivity.to_frame().rename(columns={"score": "selectivity"})
        frame.insert(3, "accuracy", self.accuracy.scores.ravel())
        frame.insert(4, "control", self.control.scores.ravel())
        frame = frame.sort_values("selectivity", ascending=False, kind="stable").reset_index(drop=True)
        return frame if k is None else frame.head(k)

    @classmethod
    def from_scores(cls, result: HeadScores) -> ProbeResult:
        """Rebuild the three grids from a saved `probe` HeadScores (they are kept in its extras)."""
        if "accuracy" not in result.extras or "control" not in result.extras:
            raise InterpError(f"{result.metric!r} results hold no probe grids; expected a `probe` result.")
        grids = {k: np.asarray(result.extras[k], dtype=float) for k in ("accuracy", "control")}
        return _result(grids["accuracy"], grids["control"], result)


def _result(accuracy: np.ndarray, control: np.ndarray, base: HeadScores) -> ProbeResult:
    """Three HeadScores sharing config, provenance and extras; accuracy keeps the per-prompt correctness."""

    def scores(grid: np.ndarray, name: str, per_prompt: np.ndarray | None = None) -> HeadScores:
        return HeadScores(grid, f"probe-{name}", base.model, base.config, base.provenance, per_prompt, base.extras)

    return ProbeResult(
        scores(accuracy, "accuracy", base.per_prompt),
        scores(control, "control"),
        scores(accuracy - control, "selectivity"),
    )


def probe_heads(
    model: LoadedModel,
    prompts: Sequence[str],
    labels: Sequence[Any],
    config: ProbeConfig | None = None,
    progress: Progress = True,
    control_model: LoadedModel | None = None,
    outputs: np.ndarray | None = None,
    control_outputs: np.ndarray | None = None,
) -> ProbeResult:
    """Probe every head for the labels; see the module docstring.

    control_model: the model for the "random-init" control (default: `random_init_copy(model, config.seed)`).
    outputs, control_outputs: head outputs from `collect_head_outputs` for these prompts, to reuse them across
    calls (e.g. both controls) instead of running the models again."""
    config = config or ProbeConfig()
    start = time.perf_counter()
    y = check_labels(prompts, labels, config.folds)
    collect = dict(position=config.position, template=config.template, batch_size=config.batch_size)
    if outputs is None:
        outputs = collect_head_outputs(model, prompts, progress=progress, **collect)  # type: ignore[arg-type]
    _check_outputs(outputs, model, len(y), "outputs")
    correct = probe_grid(outputs, y, config, progress, desc=f"probes ({model.name})")
    if config.control == "shuffled":
        y_control = np.random.default_rng(config.seed).permutation(y)
        control_name = "labels shuffled"
        control_correct = probe_grid(outputs, y_control, config, progress, desc="control probes (shuffled)")
    else:
        if control_outputs is None:
            ctrl = control_model if control_model is not None else random_init_copy(model, config.seed)
            control_name = ctrl.name
            control_outputs = collect_head_outputs(ctrl, prompts, progress=progress, **collect)  # type: ignore[arg-type]
        else:
            control_name = control_model.name if control_model is not None else "given control outputs"
        _check_outputs(control_outputs, model, len(y), "control_outputs")
        control_correct = probe_grid(control_outputs, y, config, progress, desc="control probes (random init)")
    accuracy, control = correct.mean(0), control_correct.mean(0)
    counts = Counter(y.tolist())
    extras = {
        "accuracy": accuracy.tolist(),
        "control": control.tolist(),
        "selectivity": (accuracy - control).tolist(),
        "control_kind": config.control,
        "control_model": control_name,
        "classes": sorted(counts),
        "class_counts": dict(sorted(counts.items())),
        "majority_rate": max(counts.values()) / len(y),
    }
    base = HeadScores(
        accuracy,
        "probe-accuracy",
        model.name,
        config.to_dict(),
        make_provenance(
            prompts,
            seed=config.seed,
            labels_hash=_hash(y),
            device=str(model.device),
            dtype=str(model.dtype),
            seconds=round(time.perf_counter() - start, 3),
        ),
        per_prompt=correct,
        extras=extras,
    )
    return _result(accuracy, control, base)


def _check_outputs(outputs: np.ndarray, model: LoadedModel, n_prompts: int, what: str) -> None:
    expected = (model.n_layers, model.n_heads, n_prompts)
    if outputs.ndim != 4 or outputs.shape[:3] != expected:
        raise InterpError(
            f"{what} must be [n_layers, n_heads, n_prompts, d_head] = {expected} + (d,), got {outputs.shape}."
        )


def _hash(labels: np.ndarray) -> str:
    from interp.core.provenance import prompts_hash

    return prompts_hash(labels.tolist())


@register_metric(
    "probe",
    ProbeConfig,
    "Held-out accuracy of a random-feature probe on each head's output for labelled prompts (--set "
    "labels=FILE.jsonl or harmful-harmless), minus a control (random-init copy or shuffled labels); "
    "prompts come from the labels, not --prompts",
)
def probe_metric(
    model: LoadedModel, prompts: Sequence[str], config: ProbeConfig, progress: Progress = True
) -> HeadScores:
    """The registered analyzer: returns config.report (selectivity by default); extras hold all three grids."""
    labelled, labels = load_labelled(config.labels, config.limit)
    result = probe_heads(model, labelled, labels, config, progress)
    chosen = getattr(result, config.report)
    per_prompt = result.accuracy.per_prompt if config.report == "accuracy" else None
    return HeadScores(
        chosen.scores, chosen.metric, chosen.model, chosen.config, chosen.provenance, per_prompt, chosen.extras
    )
