"""Procedurally generated scenes: a few coloured shapes with known positions and a ground-truth object list.

A scene is 1-5 objects on a grid of 4 rows x 2 columns of cells (at most one object per cell; a cell is
32 x 16 pixels of the 64 x 64 image), each a distinct shape in a distinct colour, so "What colour is the
circle?" and "What shape is the red object?" have one answer. Objects are drawn at jittered positions and
sizes on a noisy dark background. (The cells line up with pairs of the vision tower's 16 x 16 patches,
so each object is seen by two neighbouring image tokens, in reading order.) Everything is seeded:
`make_scenes(n, seed)` always returns the same scenes, and `Scene.render()` the same pixels.

Captions list the objects in reading order (top-left to bottom-right):
"a red circle, a blue square and a green triangle." CHAIR (Rohrbach et al. 2018; used by the VHD paper)
compares the shapes a caption mentions with the scene's objects:

- CHAIR_I = hallucinated object mentions / all object mentions,
- CHAIR_S = captions with at least one hallucinated object / all captions.

An object mention is a shape word; it is hallucinated when the scene has no object of that shape. (A
stricter variant also counts a mentioned (colour, shape) pair that is not in the scene: `chair(...,
match="colour+shape")`.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from interp.core import validate
from interp.core.errors import InterpError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 45, 45),
    "green": (50, 180, 70),
    "blue": (45, 95, 235),
    "yellow": (240, 215, 40),
    "purple": (155, 65, 215),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond")
GRID_ROWS, GRID_COLS = 4, 2
IMAGE_SIZE = 64  # pixels per side
ROW_WORDS = ("top", "upper", "lower", "bottom")
COL_WORDS = ("left", "right")

QuestionKind = Literal["colour", "shape", "caption"]
CAPTION_PROMPT = "Describe the image."


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    row: int  # grid cell, 0 = top (of GRID_ROWS)
    col: int  # grid cell, 0 = left (of GRID_COLS)
    cx: float  # centre in pixels
    cy: float
    radius: float  # half the object's extent in pixels
    hidden: bool = False  # fully occluded: named in the caption, not drawn (co-occurrence training sets only)

    @property
    def position(self) -> str:
        """Words for the cell, e.g. "top left", "lower right"."""
        return f"{ROW_WORDS[self.row]} {COL_WORDS[self.col]}"

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Question:
    prompt: str
    answer: str
    kind: QuestionKind


@dataclass(frozen=True)
class Scene:
    """Objects in reading order, plus the per-scene rendering randomness (background and noise)."""

    objects: tuple[SceneObject, ...]
    background: int  # grey level of the background
    noise_seed: int

    @property
    def shapes(self) -> set[str]:
        return {o.shape for o in self.objects}

    def caption(self) -> str:
        """The ground-truth caption: "a red circle, a blue square and a green triangle." """
        names = [f"a {o.name}" for o in self.objects]
        body = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return body + "."

    def questions(self) -> list[Question]:
        """Every colour and shape question this scene answers (about visible objects), and the caption request."""
        seen = [o for o in self.objects if not o.hidden]
        out = [Question(f"What colour is the {o.shape}?", o.colour, "colour") for o in seen]
        out += [Question(f"What shape is the {o.colour} object?", o.shape, "shape") for o in seen]
        out.append(Question(CAPTION_PROMPT, self.caption(), "caption"))
        return out

    def render(self) -> np.ndarray:
        """RGB pixels [IMAGE_SIZE, IMAGE_SIZE, 3] uint8."""
        rng = np.random.default_rng(self.noise_seed)
        img = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), float(self.background))
        ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5  # pixel centres
        for obj in self.objects:
            if obj.hidden:
                continue
            mask = shape_mask(obj.shape, xs - obj.cx, ys - obj.cy, obj.radius)
            # Small per-object colour jitter, so colour is a category rather than one exact value.
            colour = np.clip(np.array(COLOURS[obj.colour]) + rng.integers(-18, 19, size=3), 0, 255)
            img[mask] = colour
        img += rng.normal(0.0, 7.0, size=img.shape)
        return np.clip(img, 0, 255).astype(np.uint8)

    def to_dict(self) -> dict:
        return {
            "objects": [asdict(o) for o in self.objects],
            "background": self.background,
            "noise_seed": self.noise_seed,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        return cls(tuple(SceneObject(**o) for o in data["objects"]), int(data["background"]), int(data["noise_seed"]))


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Pixels (offsets dx, dy from the centre) inside a shape of half-extent r."""
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (np.abs(dx) <= 0.82 * r) & (np.abs(dy) <= 0.82 * r)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.05 * r
    if shape == "cross":
        arm = 0.36 * r
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    if shape == "triangle":  # pointing up: apex at (0, -r), base at dy = +0.8r
        height = 1.8 * r
        inside_y = (dy >= -r) & (dy <= 0.8 * r)
        half_width = (dy + r) / height * r
        return inside_y & (np.abs(dx) <= half_width)
    raise InterpError(f"Unknown shape {shape!r}; choose one of: {', '.join(SHAPES)}.")


def random_scene(rng: np.random.Generator, min_objects: int = 1, max_objects: int = 4) -> Scene:
    """One scene: distinct shapes, distinct colours, distinct cells, jittered centres and sizes."""
    if not 1 <= min_objects <= max_objects <= min(len(SHAPES), len(COLOURS), GRID_ROWS * GRID_COLS):
        raise InterpError(
            f"Need 1 <= min_objects <= max_objects <= {min(len(SHAPES), len(COLOURS))}, "
            f"got {min_objects}, {max_objects}."
        )
    n = int(rng.integers(min_objects, max_objects + 1))
    shapes = rng.choice(len(SHAPES), size=n, replace=False)
    colours = rng.choice(len(COLOURS), size=n, replace=False)
    cells = sorted(rng.choice(GRID_ROWS * GRID_COLS, size=n, replace=False).tolist())  # reading order
    colour_names = list(COLOURS)
    objects = [
        place(rng, SHAPES[int(s)], colour_names[int(c)], int(k)) for s, c, k in zip(shapes, colours, cells, strict=True)
    ]
    return Scene(tuple(objects), int(rng.integers(25, 70)), int(rng.integers(0, 2**31 - 1)))


def place(rng: np.random.Generator, shape: str, colour: str, cell: int) -> SceneObject:
    """An object in grid cell `cell` (reading order) at a jittered centre and size that stay inside the cell."""
    width, height = IMAGE_SIZE / GRID_COLS, IMAGE_SIZE / GRID_ROWS
    row, col = divmod(cell, GRID_COLS)
    radius = float(rng.uniform(0.30, 0.44) * height)
    jitter_x, jitter_y = width / 2 - radius - 1.0, max(0.0, height / 2 - radius - 0.5)  # stay in the cell
    cx = (col + 0.5) * width + float(rng.uniform(-jitter_x, jitter_x))
    cy = (row + 0.5) * height + float(rng.uniform(-jitter_y, jitter_y))
    return SceneObject(shape, colour, row, col, cx, cy, radius)


def make_scenes(n: int, seed: int = 0, min_objects: int = 1, max_objects: int = 4) -> list[Scene]:
    """n seeded scenes (the same n and seed always give the same scenes)."""
    if n < 1:
        raise InterpError(f"Need at least one scene, got n={n}.")
    validate.integer("seed", seed, minimum=0)  # numpy refuses negative seeds with a ValueError
    rng = np.random.default_rng(seed)
    return [random_scene(rng, min_objects, max_objects) for _ in range(n)]


# ---------------------------------------------------------------------------------------------------------
# Co-occurrence bias: scene sets where chosen shape pairs (cue -> partner) nearly always appear together
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CooccurSpec:
    """How a co-occurrence-biased scene set is drawn.

    pairs: "cue:partner,..." shape pairs; shapes may appear in one pair only.
    pair_rate: of the scenes that contain a cue, the share that also contain its partner (exact, rounded).
    hidden_rate: of the scenes that contain both, the share whose partner is hidden: named in the caption but
        not drawn (fully occluded), so a captioner can only know it from the cue. This is the cause of
        hallucination being built: when the cue is visible and the partner is not, the training captions
        still name the partner in hidden * pair / (hidden * pair + 1 - pair) of the cases (0.73 for 0.9 and 0.3).
    """

    pairs: str = "circle:square,triangle:diamond"
    pair_rate: float = 0.9
    hidden_rate: float = 0.3

    def __post_init__(self) -> None:
        parse_pairs(self.pairs)
        for name in ("pair_rate", "hidden_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise InterpError(f"{name} must be in [0, 1], got {getattr(self, name)}.")

    @property
    def pair_list(self) -> list[tuple[str, str]]:
        return parse_pairs(self.pairs)

    def named_partner_rate(self) -> float:
        """P(caption names the partner | cue visible, partner not visible) in the training captions."""
        hidden = self.pair_rate * self.hidden_rate
        return hidden / (hidden + 1 - self.pair_rate) if hidden + 1 - self.pair_rate > 0 else 0.0


def parse_pairs(spec: str) -> list[tuple[str, str]]:
    """ "circle:square,triangle:diamond" -> [("circle", "square"), ("triangle", "diamond")] (checked)."""
    pairs = []
    for part in spec.split(","):
        bits = [b.strip().lower() for b in part.split(":")]
        if len(bits) != 2 or not all(b in SHAPES for b in bits) or bits[0] == bits[1]:
            raise InterpError(f'Bad pair {part!r} in {spec!r}: use "cue:partner" with shapes from {", ".join(SHAPES)}.')
        pairs.append((bits[0], bits[1]))
    used = [s for p in pairs for s in p]
    if len(set(used)) != len(used):
        raise InterpError(f"Pairs {spec!r} share a shape; each shape may appear in one pair only.")
    return pairs


def _with_shape(scene: Scene, rng: np.random.Generator, shape: str, keep: set[str], max_objects: int) -> Scene:
    """The scene with one object of `shape` added (in a free cell, unused colour) or, when full, replacing an
    object whose shape is not in `keep` (its colour and cell stay)."""
    objs = list(scene.objects)
    if len(objs) < max_objects:
        free = sorted(set(range(GRID_ROWS * GRID_COLS)) - {o.row * GRID_COLS + o.col for o in objs})
        colours = [c for c in COLOURS if c not in {o.colour for o in objs}]
        cell = int(rng.choice(free))
        objs.append(place(rng, shape, colours[int(rng.integers(len(colours)))], cell))
        objs.sort(key=lambda o: (o.row, o.col))
    else:
        swap = [i for i, o in enumerate(objs) if o.shape not in keep]
        if not swap:
            raise InterpError(f"No object outside the pairs to swap for a {shape} (max_objects={max_objects}).")
        i = swap[int(rng.integers(len(swap)))]
        objs[i] = SceneObject(shape, *astuple_tail(objs[i]))
    return Scene(tuple(objs), scene.background, scene.noise_seed)


def astuple_tail(o: SceneObject) -> tuple:
    return (o.colour, o.row, o.col, o.cx, o.cy, o.radius, o.hidden)


def _quota(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """A shuffled boolean mask with exactly round(rate * n) True entries."""
    mask = np.zeros(n, dtype=bool)
    mask[: round(rate * n)] = True
    return rng.permutation(mask)


def make_cooccur_scenes(
    n: int, seed: int = 0, spec: CooccurSpec | None = None, min_objects: int = 1, max_objects: int = 4
) -> list[Scene]:
    """n seeded scenes with the pairing of `spec` imposed exactly (see CooccurSpec and `pairing_counts`).

    Random scenes are drawn as `make_scenes` does; then, pair by pair, exactly round(pair_rate * n_cue) of the
    scenes holding the cue get the partner (added, or swapped in for an object outside every pair) and the
    rest lose it; finally exactly round(hidden_rate * n_both) of the scenes holding both hide the partner.
    Edits for one pair never touch another pair's shapes, so every pair's counts are exact."""
    spec = spec or CooccurSpec()
    if max_objects < 2:
        raise InterpError("Co-occurrence scenes need max_objects >= 2 (a cue and its partner).")
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, min_objects, max_objects) for _ in range(n)]
    pair_shapes = {s for p in spec.pair_list for s in p}
    for cue, partner in spec.pair_list:
        idx = [i for i, s in enumerate(scenes) if cue in s.shapes]
        for i, want in zip(idx, _quota(rng, len(idx), spec.pair_rate), strict=True):
            scene = scenes[i]
            if want and partner not in scene.shapes:
                scenes[i] = _with_shape(scene, rng, partner, pair_shapes, max_objects)
            elif not want and partner in scene.shapes:
                objs = tuple(o for o in scene.objects if o.shape != partner)
                scenes[i] = Scene(objs, scene.background, scene.noise_seed)
    for cue, partner in spec.pair_list:
        idx = [i for i, s in enumerate(scenes) if {cue, partner} <= s.shapes]
        for i, hide in zip(idx, _quota(rng, len(idx), spec.hidden_rate), strict=True):
            if hide:
                scene = scenes[i]
                objs = tuple(
                    SceneObject(o.shape, *astuple_tail(o)[:-1], True) if o.shape == partner else o
                    for o in scene.objects
                )
                scenes[i] = Scene(objs, scene.background, scene.noise_seed)
    return scenes


def pairing_counts(scenes: Sequence[Scene], spec: CooccurSpec) -> dict[str, dict[str, int]]:
    """Per pair: scenes with the cue, with cue and partner, with the partner hidden, with the partner alone."""
    out = {}
    for cue, partner in spec.pair_list:
        has = [(cue in s.shapes, partner in s.shapes) for s in scenes]
        hidden = sum(any(o.shape == partner and o.hidden for o in s.objects) for s in scenes)
        out[f"{cue}:{partner}"] = {
            "cue": sum(c for c, _ in has),
            "cue_and_partner": sum(c and p for c, p in has),
            "partner_hidden": hidden,
            "partner_without_cue": sum(p and not c for c, p in has),
        }
    return out


def pair_breaking_scenes(
    n: int, seed: int = 0, spec: CooccurSpec | None = None, min_objects: int = 1, max_objects: int = 4
) -> list[Scene]:
    """n seeded held-out scenes that break the pairing: each holds at least one cue and none of the partners
    of the cues it holds (nothing hidden). Pairs take turns: scene i is built around cue i mod n_pairs."""
    spec = spec or CooccurSpec()
    pairs = spec.pair_list
    rng = np.random.default_rng(seed)
    out: list[Scene] = []
    while len(out) < n:
        cue, _ = pairs[len(out) % len(pairs)]
        scene = random_scene(rng, min_objects, max_objects)
        if cue not in scene.shapes:
            scene = _with_shape(scene, rng, cue, {p for p, _ in pairs}, max_objects)
        partners = {b for a, b in pairs if a in scene.shapes}
        objs = tuple(o for o in scene.objects if o.shape not in partners)
        out.append(Scene(objs, scene.background, scene.noise_seed))
    return out


def absent_partner_rate(captions: Sequence[str], scenes: Sequence[Scene], spec: CooccurSpec) -> dict[str, float]:
    """Of the (scene, cue) cases where the cue is in the scene and its partner is not: how often the caption
    names the partner. Returns the rate, the count named and the number of cases."""
    named = cases = 0
    for caption, scene in zip(captions, scenes, strict=True):
        said = {shape for _, shape in mentioned_objects(caption)}
        for cue, partner in spec.pair_list:
            if cue in scene.shapes and partner not in scene.shapes:
                cases += 1
                named += partner in said
    return {"rate": named / cases if cases else 0.0, "named": named, "cases": cases}


def save_scenes(scenes: Sequence[Scene], folder: str | Path) -> Path:
    """Write scene_000.png, ... and scenes.json (the ground truth) into folder."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, scene in enumerate(scenes):
        name = f"scene_{i:03d}.png"
        Image.fromarray(scene.render()).save(folder / name)
        records.append({"file": name, "caption": scene.caption(), **scene.to_dict()})
    (folder / "scenes.json").write_text(json.dumps(records, indent=1))
    return folder


def load_scene_file(folder: str | Path) -> list[Scene]:
    """The ground truth written by `save_scenes`."""
    path = Path(folder) / "scenes.json"
    if not path.is_file():
        raise InterpError(
            f"{folder} has no scenes.json (write scene sets with interp.lines.vision.scenes.save_scenes)."
        )
    return [Scene.from_dict(r) for r in json.loads(path.read_text())]


# ---------------------------------------------------------------------------------------------------------
# Answers and hallucination
# ---------------------------------------------------------------------------------------------------------
_WORD = re.compile(r"[a-z]+")


def first_word(text: str) -> str:
    """The first word of a generated answer, lower-cased ("Red." -> "red")."""
    match = _WORD.search(text.lower())
    return match.group(0) if match else ""


def mentioned_objects(caption: str) -> list[tuple[str | None, str]]:
    """(colour or None, shape) for every shape word in a caption, in order; plurals count as mentions."""
    words = _WORD.findall(caption.lower())
    out = []
    for i, word in enumerate(words):
        shape = word[:-1] if word.endswith("s") and word[:-1] in SHAPES else word
        if shape in SHAPES:
            colour = words[i - 1] if i > 0 and words[i - 1] in COLOURS else None
            out.append((colour, shape))
    return out


@dataclass(frozen=True)
class ChairResult:
    chair_s: float  # captions with >= 1 hallucinated object / captions
    chair_i: float  # hallucinated mentions / mentions
    recall: float  # scene objects mentioned / scene objects
    n_captions: int
    n_mentions: int
    n_hallucinated: int

    def to_dict(self) -> dict:
        return asdict(self)


def chair(
    captions: Sequence[str], scenes: Sequence[Scene], match: Literal["shape", "colour+shape"] = "shape"
) -> ChairResult:
    """CHAIR_S / CHAIR_I of captions against their scenes' ground-truth objects (see the module doc)."""
    if len(captions) != len(scenes):
        raise InterpError(f"{len(captions)} captions for {len(scenes)} scenes: give one caption per scene.")
    if not captions:
        raise InterpError("CHAIR needs at least one caption.")
    bad_captions = mentions = hallucinated = found = total = 0
    for caption, scene in zip(captions, scenes, strict=True):
        objs = mentioned_objects(caption)
        truth = {(o.colour, o.shape) for o in scene.objects}
        wrong = 0
        for colour, shape in objs:
            ok = shape in scene.shapes
            if match == "colour+shape" and colour is not None:
                ok = (colour, shape) in truth
            wrong += not ok
        mentions += len(objs)
        hallucinated += wrong
        bad_captions += wrong > 0
        said = {shape for _, shape in objs}
        found += sum(o.shape in said for o in scene.objects)
        total += len(scene.objects)
    return ChairResult(
        chair_s=bad_captions / len(captions),
        chair_i=hallucinated / mentions if mentions else 0.0,
        recall=found / total,
        n_captions=len(captions),
        n_mentions=mentions,
        n_hallucinated=hallucinated,
    )
