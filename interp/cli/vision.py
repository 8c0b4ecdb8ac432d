"""Vision commands: `interp vision generate` (with --vhr), `scenes`, `train` (the scenes-VLM) and `experiment`;
`scan` (core) takes --images / --prompt. `interp generate` / `interp scenes` remain as aliases.

interp scan vhd --model scenes-vlm --images DIR --prompt "Describe the image." --out vhd.json
interp scan t-vhd --model scenes-vlm --prompt "Describe the image." --set n_images=4
interp generate --model scenes-vlm --image scene.png --prompt "Describe the image." --vhr --alpha 2
interp scenes --out scenes/ --n 20 --seed 1
"""

from __future__ import annotations

from pathlib import Path

import typer

from interp.cli import (
    MODEL_HELP,
    checked,
    console,
    device_option,
    dtype_option,
    friendly_errors,
    print_table,
    writable_folder,
    wrote,
)
from interp.core.errors import UsageError

vision_app = typer.Typer(
    help="Vision-language models: VHR generation, scenes, the scenes-VLM's training and experiment."
)


def register(app: typer.Typer) -> None:
    # `scan` (interp/cli/core.py) takes --images / --prompt for the vision metrics itself.
    for name, fn in (("generate", generate), ("scenes", scenes)):
        vision_app.command(name=name)(friendly_errors(fn))
        app.command(name=name)(friendly_errors(fn))  # the older top-level spellings
    vision_app.command(name="train")(friendly_errors(train))
    vision_app.command(name="experiment")(friendly_errors(experiment))
    vision_app.command(name="cooccur")(friendly_errors(cooccur))
    app.add_typer(vision_app, name="vision")


def _threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}.")
        import torch

        torch.set_num_threads(threads)


def train(
    options: list[str] = typer.Option([], "--set", "-s", help="Override a TrainConfig field, key=value."),
    threads: int | None = typer.Option(None, help="torch threads (default: torch's choice)."),
) -> None:
    """Train the scenes-VLM's small parts (vision tower, projector, LoRA) on generated scenes (seeded)."""
    from interp.cli import parse_options
    from interp.lines.vision.train import TrainConfig
    from interp.lines.vision.train import train as run_train

    config = TrainConfig.from_strings(parse_options(options))
    _threads(threads)
    run_train(config)


def experiment(
    options: list[str] = typer.Option([], "--set", "-s", help="Override an ExperimentConfig field, key=value."),
    threads: int | None = typer.Option(None, help="torch threads (default: torch's choice)."),
    device: str = device_option(),
    dtype: str = dtype_option("float32"),
) -> None:
    """QA accuracy, VHD-head ablation vs random heads, CHAIR with/without VHR, T-VHD (docs/vision_heads.md)."""
    from interp.cli import parse_options
    from interp.lines.vision.experiment import ExperimentConfig, run
    from interp.model.loading import resolve_device, resolve_dtype

    resolve_device(device), resolve_dtype(dtype)  # fail now, not after the run has started
    config = ExperimentConfig.from_strings({"device": device, "dtype": dtype, **parse_options(options)})
    _threads(threads)
    run(config)


def cooccur(
    options: list[str] = typer.Option([], "--set", "-s", help="Override a CooccurConfig field, key=value."),
    threads: int | None = typer.Option(None, help="torch threads (default: torch's choice)."),
) -> None:
    """The co-occurrence hallucination testbed: baseline vs VHR vs random heads on pair-breaking scenes."""
    from interp.cli import parse_options
    from interp.lines.vision.cooccur import CooccurConfig, run

    config = CooccurConfig.from_strings(parse_options(options))
    _threads(threads)
    run(config)


def generate(
    prompt: str = typer.Option(..., "--prompt", help="The prompt (asked about each image)."),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    image: list[str] = typer.Option([], "--image", help="An image file (repeatable)."),
    images: str | None = typer.Option(None, "--images", help='A folder of images, or "scenes" (generated).'),
    n_images: int = typer.Option(4, help='How many images from --images (all of a folder: 0; "scenes": >= 1).'),
    vhr: bool = typer.Option(False, "--vhr/--no-vhr", help="Also generate with VHR and show both."),
    alpha: float = typer.Option(2.0, help="VHR: factor on the selected heads' outputs."),
    layers: str = typer.Option("auto", help='VHR: "auto" (layer 1 + last 14/32 of layers), "all", or "1,17-29".'),
    selection: str = typer.Option("median", help="VHR: median | top_k (per layer)."),
    top_k: int = typer.Option(3, help="VHR: heads per layer for --selection top_k."),
    outlier_std: float | None = typer.Option(1.0, help="VHR: outlier rule threshold in std (none: off)."),
    positions: str = typer.Option(
        "generation", help="VHR: generation (the paper: only positions that predict a token) | all (prefill too)."
    ),
    max_new_tokens: int = typer.Option(48, help="Tokens to generate."),
    template: str = typer.Option("auto", help="auto | chat | raw | query | paper."),
    seed: int = typer.Option(0, help="Seed of the generated scenes for --images scenes."),
    device: str = device_option(),
    dtype: str | None = dtype_option(),
) -> None:
    """Generate an answer (per image for a vision-language model), with and without VHR."""
    from interp.core.prompts import check_prompts
    from interp.engine.run import generate as generate_text
    from interp.lines.vision.metrics import VHRConfig, generate_images, resolve_images, vhr_generate
    from interp.model.loading import load_model

    check_prompts([prompt])
    config = None
    if vhr:
        config = VHRConfig(
            alpha=alpha,
            layers=layers,
            selection=selection,  # type: ignore[arg-type]
            top_k=top_k,
            outlier_std=outlier_std,
            template=template,  # type: ignore[arg-type]
            positions=positions,  # type: ignore[arg-type]
        )
    if (image or images) and vhr is False and not image and images is None:
        raise UsageError("Give --image FILE or --images DIR.")
    pictures = resolve_images(images, n_images, seed) if images is not None else []
    pictures += resolve_images(list(image)) if image else []
    loaded = load_model(model, device, dtype)
    if not pictures:
        if vhr:
            raise UsageError("--vhr needs images (--image FILE or --images DIR) and a vision-language model.")
        console.print(generate_text(loaded, [prompt], max_new_tokens=max_new_tokens, template=template)[0])  # plain
        return
    prompts = [prompt] * len(pictures)
    base = generate_images(loaded, pictures, prompts, template=template, max_new_tokens=max_new_tokens)
    columns = ["image", "base"]
    rows = [[str(i), b] for i, b in enumerate(base)]
    if config is not None:
        reinforced, used = vhr_generate(loaded, pictures, prompts, config, max_new_tokens=max_new_tokens)
        columns += [f"VHR (alpha={alpha:g}, layers={layers})", "reinforced heads"]
        for row, text, iv in zip(rows, reinforced, used, strict=True):
            row += [text, ",".join(h.label for h in iv.heads) if iv is not None else "(none)"]
    print_table(f"{loaded.name}: {prompt!r}", columns, rows, show_lines=True)


def scenes(
    out: Path = checked(
        typer.Option(..., "--out", "-o", help="Folder to write scene_000.png ... and scenes.json into."),
        writable_folder(),
    ),
    n: int = typer.Option(20, "--n", help="How many scenes."),
    seed: int = typer.Option(0, help="Seed (the same seed gives the same scenes)."),
    max_objects: int = typer.Option(4, help="Most objects per scene (1-5)."),
) -> None:
    """Write generated scenes (coloured shapes with known positions) and their ground truth to a folder."""
    from interp.lines.vision.scenes import make_scenes, save_scenes

    made = make_scenes(n, seed, max_objects=max_objects)
    save_scenes(made, out)
    wrote(f"{len(made)} scenes to {out} (ground truth in {out / 'scenes.json'}).")
