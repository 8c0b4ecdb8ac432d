"""Images from files, folders or arrays, as RGB PIL images (what every image processor accepts)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from interp.core.errors import PromptError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_image(image: Any) -> Any:
    """A path, a PIL image, or an array ([H, W, 3] / [H, W] uint8, or floats in [0, 1]) -> RGB PIL image."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        if not path.is_file():
            raise PromptError(f"Image file {path} does not exist.")
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except Image.DecompressionBombError as exc:  # e.g. 20000 x 20000: refused before decoding
            raise PromptError(f"{path} is too large to load as an image: {exc}") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:  # PIL: SyntaxError on bad headers
            raise PromptError(f"{path} is not a readable image ({', '.join(IMAGE_SUFFIXES)}): {exc}") from exc
    array = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise PromptError(f"An image array must be [H, W, 3] (or [H, W]); got shape {array.shape}.")
    if array.dtype != np.uint8:
        if array.min() < 0 or array.max() > 1:
            raise PromptError("A float image array must hold values in [0, 1] (or pass uint8 0-255).")
        array = (array * 255).round().astype(np.uint8)
    return Image.fromarray(array[:, :, :3], "RGB")


def image_files(source: str | os.PathLike[str]) -> list[Path]:
    """The image files in a folder (sorted by name), or [the file] for a single image file."""
    path = Path(source)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise PromptError(f"Images path {path} does not exist (give a folder of images or an image file).")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise PromptError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    return files


def load_images(source: str | os.PathLike[str] | Sequence[Any], limit: int | None = None) -> list[Any]:
    """RGB images from a folder, a file, or a list of paths / arrays / PIL images."""
    items: Sequence[Any] = image_files(source) if isinstance(source, str | os.PathLike) else source
    if not items:
        raise PromptError("No images given.")
    items = list(items)[:limit] if limit else list(items)
    return [load_image(item) for item in items]
