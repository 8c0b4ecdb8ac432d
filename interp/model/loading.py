"""The only place that knows where weights come from.

`load_model(name_or_path)` accepts a registered name ("default", "tiny-llama", …), a local Hugging Face
model directory (config.json + safetensors + tokenizer files) or a local .gguf file. Everything loads
through transformers with `local_files_only=True` (no hub access, never `trust_remote_code`) and is then
wrapped in TransformerLens's `TransformerBridge`, whose hook points the rest of the toolkit uses.

GGUF files are de-quantized by transformers (needs the `gguf` package), which takes ~20 s for the
default model, so the converted float weights are cached as safetensors in the user cache directory
($INTERP_CACHE_DIR, else $XDG_CACHE_HOME/interp, else ~/.cache/interp); later loads take seconds.

Named models live in interp/model/registry.py (the bundled ones in interp/model/zoo/); TransformerLens
workarounds in interp/model/bridge.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from interp.core.errors import ModelLoadError, unknown_name
from interp.core.files import atomic_directory, remove_stale_temporaries
from interp.core.validate import writable_dir
from interp.model.bridge import boot_bridge, check_supported, quiet
from interp.model.checks import check_device, check_safetensors, read_config
from interp.model.loaded import LoadedModel
from interp.model.registry import cache_dir, is_registered, locate, registered_names

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"Unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'.") from exc
    check_device(dev, str(device))  # before loading: torch would fail later with an AssertionError
    return dev


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32  # exact comparisons and CPU speed both favour float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise unknown_name("dtype", str(dtype), DTYPES)
    return DTYPES[dtype]


def load_model(
    name_or_path: str | os.PathLike[str] = "default",
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    *,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load a registered model by name, a local HF model directory, or a local .gguf file.

    device: None picks CUDA when available, else CPU. dtype: None means float32.
    device_map: split the model over several devices (multi-GPU, or offloaded to "cpu"/"disk") with
        accelerate: "auto" / "balanced" / "sequential" (transformers fills the visible GPUs in order) or a
        dict {module name: device}, e.g. {"model.embed_tokens": 0, "model.layers.0": 0, …, "lm_head": 1};
        `device` is then ignored. max_memory (e.g. {0: "70GiB", 1: "70GiB"}) and offload_folder (for
        "disk") as in transformers. The bridge keeps the placement: inputs go to the embedding's device and
        every later tensor follows its layer.
    """
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    placement = None
    if device_map is not None:
        placement = {"device_map": device_map}
        if max_memory is not None:
            placement["max_memory"] = max_memory
        if offload_folder is not None:
            placement["offload_folder"] = str(offload_folder)
    name = str(name_or_path)
    if is_registered(name):
        entry, located = locate(name)
        if isinstance(located, tuple):
            hf_model, tokenizer = located
            if placement is None:
                return wrap_model(hf_model.to(device=dev, dtype=dt), tokenizer, entry.name, entry.source)
            located = _save_temporary(hf_model, tokenizer)  # device maps are applied by from_pretrained
        return _load_path(
            Path(located),
            dev,
            dt,
            display_name=entry.name,
            hf_name=entry.hf_name,
            source=entry.source,
            placement=placement,
        )
    path = Path(name).expanduser()
    if path.exists():
        return _load_path(
            path, dev, dt, display_name=str(path), hf_name=None, source=f"local path {path}", placement=placement
        )
    if path.suffix or os.sep in name or name.startswith("."):
        raise ModelLoadError(f"Model path {path} does not exist.")
    known = registered_names()
    err = unknown_name("model", name, known)
    raise type(err)(f"{err} Or pass a local model directory or a .gguf file.")


def _save_temporary(hf_model: Any, tokenizer: Any) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="interp-model-"))
    hf_model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def _load_path(
    path: Path,
    device: torch.device,
    dtype: torch.dtype,
    *,
    display_name: str,
    hf_name: str | None,
    source: str,
    placement: dict[str, Any] | None = None,
) -> LoadedModel:
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(
                f"{path} is a file but not a .gguf file; pass a .gguf file or a Hugging Face model directory."
            )
        directory = gguf_to_cache(path)
    else:
        directory = path
    hf_model, tokenizer = _load_hf_dir(directory, device, dtype, origin=path, placement=placement)
    return wrap_model(hf_model, tokenizer, display_name, source, hf_name=hf_name)


def _check_hf_dir(directory: Path) -> dict[str, Any]:
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(
            f"{directory} is not a Hugging Face model directory: config.json is missing "
            "(expected config.json, *.safetensors and tokenizer files, as written by save_pretrained)."
        )
    config = read_config(config_file)  # an object, UTF-8, well-formed "architectures"
    weights = sorted(directory.glob("*.safetensors"))
    for weight_file in weights:
        check_safetensors(weight_file)  # a truncated file: one clear error, not a SafetensorError
    if not weights:
        other = sorted(p.name for p in directory.glob("*.bin")) + sorted(p.name for p in directory.glob("*.pt*"))
        hint = (
            f" Found {', '.join(other)}: pickled weights are not loaded for safety; convert them to "
            "safetensors (model.save_pretrained(dir, safe_serialization=True))."
            if other
            else ""
        )
        raise ModelLoadError(f"Missing weights: {directory} has no *.safetensors file.{hint}")
    has_tokenizer = any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json"))
    if not has_tokenizer:
        raise ModelLoadError(
            f"{directory} has no tokenizer files (tokenizer.json, tokenizer.model or vocab.json); "
            "save the tokenizer next to the model with tokenizer.save_pretrained(dir)."
        )
    return config


def _load_hf_dir(
    directory: Path, device: torch.device, dtype: torch.dtype, origin: Path, placement: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = _check_hf_dir(directory)
    architectures = config.get("architectures") or [config.get("model_type", "?")]
    check_supported(architectures, directory)
    if is_vision_language(config):
        return _load_vlm_dir(directory, device, dtype, origin)
    with quiet():
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
            hf_model = AutoModelForCausalLM.from_pretrained(
                directory,
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=True,
                dtype=dtype,
                **(placement or {}),
            )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            where = f" with device_map={placement['device_map']!r}" if placement else ""
            raise ModelLoadError(f"Could not load the model in {origin}{where}: {exc}") from exc
    # A device map has placed every module already; moving the model would undo it.
    return (hf_model if placement else hf_model.to(device)).eval(), tokenizer


VISION_LANGUAGE_TYPES = ("llava", "llava_next")


def is_vision_language(config: dict[str, Any]) -> bool:
    """A LLaVA-family config (LLaVA-1.5 / LLaVA-NeXT): a vision tower, a projector and a language model."""
    return config.get("model_type") in VISION_LANGUAGE_TYPES or "vision_config" in config


def _load_vlm_dir(directory: Path, device: torch.device, dtype: torch.dtype, origin: Path) -> tuple[Any, Any]:
    """A LLaVA directory: the model and its processor (tokenizer + image processor), both local files only.

    Returns (model, processor); `wrap_model` recognizes the processor. Image processors load with their PIL
    backend when torchvision is absent, so nothing beyond the base dependencies is needed.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if not any((directory / f).is_file() for f in ("processor_config.json", "preprocessor_config.json")):
        raise ModelLoadError(
            f"{directory} is a vision-language model but has no image processor files "
            "(preprocessor_config.json / processor_config.json); save them with processor.save_pretrained(dir)."
        )
    with quiet():
        try:
            processor = AutoProcessor.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
            hf_model = AutoModelForImageTextToText.from_pretrained(
                directory, local_files_only=True, trust_remote_code=False, use_safetensors=True, dtype=dtype
            )
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise ModelLoadError(f"Could not load the vision-language model in {origin}: {exc}") from exc
    return hf_model.to(device).eval(), processor


def model_directory(name_or_path: str | os.PathLike[str] = "default") -> Path:
    """The local Hugging Face directory behind a registered model or path (GGUF files are converted once).

    Used by training code that needs the raw transformers weights (e.g. the scenes-VLM's language model).
    """
    name = str(name_or_path)
    if is_registered(name):
        entry, located = locate(name)
        if isinstance(located, tuple):
            raise ModelLoadError(f'Model "{entry.name}" is built in code; it has no directory.')
        path = Path(located)
    else:
        path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return gguf_to_cache(path)
    if not path.is_dir():
        raise ModelLoadError(f"Model path {path} does not exist.")
    return path


def _gguf_cache_key(path: Path) -> str:
    stat = path.stat()
    ident = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def gguf_to_cache(path: Path) -> Path:
    """De-quantize a GGUF file once into a cached HF directory (safetensors) and return that directory."""
    target = cache_dir() / "models" / f"{path.stem}-{_gguf_cache_key(path)}"
    if (target / "config.json").is_file() and list(target.glob("*.safetensors")):
        return target
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(f"Loading {path.name} needs the gguf package. Install it with:\n    pip install gguf")
    # Before the long conversion: a cache we cannot write to fails now, and folders left by killed runs go.
    writable_dir(target.parent, "The model cache", "Set INTERP_CACHE_DIR to a writable folder.")
    remove_stale_temporaries(target.parent)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("Converting %s to float weights (once; cached in %s)…", path.name, target)
    with quiet():
        try:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, local_files_only=True, dtype=torch.float32
            )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(f"Could not read GGUF file {path}: {exc}") from exc
    # The weights are de-quantized floats now; drop the GGUF quantization marker so the cached copy
    # loads as a plain float model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    with atomic_directory(target) as tmp, quiet():  # a crash never leaves a half-written cache entry
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "interp_source.json").write_text(json.dumps({"gguf": str(path.resolve())}))
    return target


def wrap_model(
    hf_model: Any, tokenizer: Any, name: str, source: str = "in memory", hf_name: str | None = None
) -> LoadedModel:
    """Wrap an already-loaded HF causal LM + tokenizer in a TransformerBridge (no hub access).

    For a vision-language model pass its multimodal processor as `tokenizer`: the processor's tokenizer
    does the text and `LoadedModel.processor` keeps the processor for images.
    """
    processor = None
    if hasattr(tokenizer, "image_processor"):  # a multimodal processor (tokenizer + image processor)
        processor, tokenizer = tokenizer, tokenizer.tokenizer
    architectures = getattr(hf_model.config, "architectures", None) or [type(hf_model).__name__]
    check_supported(architectures, Path(name))
    if getattr(hf_model.config, "architectures", None) is None:
        hf_model.config.architectures = [type(hf_model).__name__]
    bridge = boot_bridge(hf_model, tokenizer, hf_name or name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    loaded = LoadedModel(bridge, hf_model, tokenizer, name, source)
    if processor is not None:
        bridge.processor = processor
        loaded.processor = processor
    return loaded


def random_init_copy(model: LoadedModel, seed: int = 0) -> LoadedModel:
    """A randomly initialized model of the same architecture and config (same tokenizer), seeded."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = AutoModelForCausalLM.from_config(model.hf_model.config)
    hf = hf.to(device=model.device, dtype=model.dtype).eval()
    return wrap_model(hf, model.tokenizer, f"{model.name} (random init, seed {seed})", source="random init")


def load_causal_lm(directory: Path, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """The raw transformers causal LM and tokenizer in a local directory (no bridge), e.g. for training code.

    Local files only, safetensors only, never remote code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_hf_dir(directory)
    lm = AutoModelForCausalLM.from_pretrained(
        directory, local_files_only=True, trust_remote_code=False, use_safetensors=True, dtype=dtype
    )
    return lm, AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
