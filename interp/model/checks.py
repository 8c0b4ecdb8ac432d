"""Checks on a model directory's files before transformers reads them, so a corrupt file is one clear error
(naming the file and what is wrong) instead of a traceback from deep inside transformers or safetensors.

- config.json: UTF-8 JSON holding an object, `architectures` a list of names.
- *.safetensors: the header (8-byte length + JSON) is complete and every tensor's bytes lie inside the file
  (a truncated download or copy is the common case). Only the header is read, never the weights.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from interp.core.errors import ModelLoadError

# A safetensors header is a small JSON index; the format caps it at 100 MB.
MAX_HEADER_BYTES = 100_000_000


def read_config(config_file: Path) -> dict[str, Any]:
    """The parsed config.json of a model directory (an object with a well-formed `architectures`)."""
    try:
        config = json.loads(config_file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{config_file} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{config_file} is not valid JSON: {exc.msg}.") from None
    except RecursionError:
        raise ModelLoadError(f"{config_file} is not a model config: JSON nested too deeply.") from None
    except OSError as exc:
        raise ModelLoadError(f"{config_file} cannot be read: {exc.strerror}.") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_file} must hold a JSON object (a model config), got a {type(config).__name__}.")
    architectures = config.get("architectures")
    if architectures is not None and (
        not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures)
    ):
        raise ModelLoadError(
            f'{config_file}: "architectures" must be a list of class names such as ["LlamaForCausalLM"], '
            f"got {architectures!r}."
        )
    model_type = config.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise ModelLoadError(f'{config_file}: "model_type" must be a string, got {model_type!r}.')
    return config


def check_safetensors(path: Path) -> None:
    """Refuse a truncated or malformed .safetensors file, reading only its header."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ModelLoadError(f"{path} is truncated or not a safetensors file ({size} bytes).")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise ModelLoadError(f"{path} is truncated or corrupt: its header does not fit in the file.")
            header = json.loads(fh.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ModelLoadError(f"{path} is corrupt: its header is not valid JSON.") from None
    except OSError as exc:
        raise ModelLoadError(f"{path} cannot be read: {exc.strerror}.") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{path} is corrupt: its header is not a JSON object.")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise ModelLoadError(f"{path} is corrupt: tensor {name!r} has no valid data_offsets.")
        end = max(end, offsets[1])
    if 8 + n + end > size:
        raise ModelLoadError(
            f"{path} is truncated: its tensors need {8 + n + end} bytes, the file has {size}. "
            "Copy or download it again."
        )


def check_device(device: Any, shown: str | None = None) -> None:
    """Refuse a device this torch build or machine does not have (torch would assert deep inside).

    shown: the device as the user wrote it (torch prints "cuda:999" as "cuda:-25")."""
    import torch

    name = shown if shown is not None else str(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"Device {name!r} is not available: this torch build has no CUDA or no GPU is visible; "
                "use --device cpu."
            )
        count = torch.cuda.device_count()
        if device.index is not None and not 0 <= device.index < count:
            raise ModelLoadError(f"Device {name!r} does not exist: {count} GPU(s) visible (cuda:0 … cuda:{count - 1}).")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ModelLoadError(f"Device {name!r} is not available on this machine; use --device cpu.")
