"""The only place that knows where weights come from.

`load_model(name_or_path)` accepts a registered name ("default", "tiny-llama", …), a local Hugging Face
model directory (config.json + safetensors + tokenizer files), a local .gguf file, or a Hugging Face hub id
("org/name", optionally at a `revision`). Everything loads through transformers from local files (never
`trust_remote_code`, safetensors only) and is then wrapped in TransformerLens's `TransformerBridge`, whose
hook points the rest of the toolkit uses.

Hub ids resolve through huggingface_hub's standard cache (`HF_HUB_CACHE`, else `HF_HOME`/hub, else
~/.cache/huggingface/hub). The network is the user's call: with `HF_HUB_OFFLINE` set only the cache is read
(an uncached id is a one-line error naming the cache and the command that fetches it); otherwise missing files
are downloaded, and only safetensors weights, configs and tokenizer / processor files are ever fetched
(`HUB_ALLOW_PATTERNS`): pickled weights and code never reach the disk. Nothing here turns the network off or
on for the process.

GGUF files are de-quantized by transformers (needs the `gguf` package), which takes ~20 s for the
default model, so the converted float weights are cached as safetensors in the user cache directory
($INTERP_CACHE_DIR, else $XDG_CACHE_HOME/interp, else ~/.cache/interp); later loads take seconds.

Named models live in interp/model/registry.py (the bundled ones in interp/model/zoo/); TransformerLens
workarounds in interp/model/bridge.py; models the user built themselves (a bridge, an HF model object) are
adopted by interp/model/adopt.py.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from interp.core.errors import ModelLoadError, unknown_name
from interp.core.files import atomic_directory, remove_stale_temporaries
from interp.core.validate import writable_dir
from interp.model.bridge import boot_bridge, check_supported, fold_value_bias, quiet
from interp.model.checks import check_device, check_safetensors, read_config
from interp.model.loaded import LoadedModel, cached_wrapper, remember_wrapper
from interp.model.registry import cache_dir, is_registered, locate, registered_names

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


DEVICE_CHOICES = "auto | cpu | cuda | cuda:N"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device; "auto" / None: CUDA when this torch build sees a GPU, else CPU. "cuda" / "cuda:N"
    without one is an error that says why (a CPU-only build, or fewer GPUs), before anything loads."""
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"Unknown device {device!r}: use {DEVICE_CHOICES}.") from exc
    if dev.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:  # ROCm also says "cuda"
            raise ModelLoadError(
                f"Device {device!r} needs CUDA, but this torch ({torch.__version__}) is a CPU-only build: "
                'use device "cpu" or "auto", or install a CUDA build of torch.'
            )
        count = torch.cuda.device_count()
        if count == 0:
            raise ModelLoadError(f'Device {device!r}: this torch has CUDA but sees no GPU; use "cpu" or "auto".')
        if dev.index is not None and dev.index >= count:
            raise ModelLoadError(f"Device {device!r}: only {count} GPU(s) visible (cuda:0 … cuda:{count - 1}).")
    elif dev.type not in ("cpu", "mps", "xpu", "meta"):
        raise ModelLoadError(f"Unknown device {device!r}: use {DEVICE_CHOICES}.")
    check_device(dev, str(device))  # mps and the rest; before loading, torch would fail later with an AssertionError
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
    revision: str | None = None,
    fold_value_biases: bool = False,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load a registered model by name, a local HF model directory, a local .gguf file, or a hub id.

    name_or_path: "default", "tiny-llama", … (`interp models`); a directory or .gguf file; or a Hugging Face
        hub id "org/name" (from the huggingface_hub cache; downloaded unless HF_HUB_OFFLINE is set).
    device: None or "auto" picks CUDA when available, else CPU; "cpu", "cuda", "cuda:N".
    dtype: None means float32; "bfloat16", "float16".
    revision: for a hub id, a branch, tag or commit hash (default: main).
    fold_value_biases: fold each head's value bias into the attention output bias, as HookedTransformer did
        by default (TransformerLens' own weight processing). The model computes the same function, but
        hook_z no longer contains the bias, so *zero* ablation (and "scale") then keeps the head's constant
        b_V·W_O contribution; mean / resample / uniform ablation are unchanged. Only models with value biases
        differ (GPT-2, Qwen2 / Qwen2.5, Pythia / GPT-NeoX, OPT, Phi-2, …; not Llama / Mistral / SmolLM2 /
        Gemma / Qwen3): see docs/transformerlens.md. Default False: raw HF weights, as the bridge boots.
    device_map: split the model over several devices (multi-GPU, or offloaded to "cpu"/"disk") with
        accelerate: "auto" / "balanced" / "sequential" (transformers fills the visible GPUs in order) or a
        dict {module name: device}, e.g. {"model.embed_tokens": 0, "model.layers.0": 0, …, "lm_head": 1};
        `device` is then ignored. max_memory (e.g. {0: "70GiB", 1: "70GiB"}) and offload_folder (for
        "disk") as in transformers. The bridge keeps the placement: inputs go to the embedding's device and
        every later tensor follows its layer.
    """
    loaded = _load_any(name_or_path, device, dtype, revision, device_map, max_memory, offload_folder)
    if fold_value_biases:
        fold_value_bias(loaded.bridge, loaded.name)
        loaded.source += "; value biases folded into the output bias"
    return loaded


def _load_any(
    name_or_path: str | os.PathLike[str],
    device: str | torch.device | None,
    dtype: str | torch.dtype | None,
    revision: str | None,
    device_map: str | dict[str, Any] | None,
    max_memory: dict[Any, Any] | None,
    offload_folder: str | os.PathLike[str] | None,
) -> LoadedModel:
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    placement = None
    if device_map is not None:
        placement = {"device_map": device_map}
        if max_memory is not None:
            placement["max_memory"] = max_memory
        if offload_folder is not None:
            placement["offload_folder"] = str(offload_folder)
    name = str(name_or_path)
    if revision is not None and not is_hub_id(name):
        raise ModelLoadError(f"revision={revision!r} is for hub ids (org/name); {name!r} is not one.")
    if is_registered(name):
        entry, located = locate(name)
        if isinstance(located, tuple):
            hf_model, tokenizer = located
            if placement is None:
                return _wrap(hf_model.to(device=dev, dtype=dt), tokenizer, entry.name, entry.source)
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
    if is_hub_id(name):
        directory, commit = hub_snapshot(name, revision)
        source = f"hub {name}" + (f"@{commit}" if commit else "")
        return _load_path(directory, dev, dt, display_name=name, hf_name=name, source=source, placement=placement)
    if path.suffix or os.sep in name or name.startswith("."):
        raise ModelLoadError(f"Model path {path} does not exist.")
    known = registered_names()
    err = unknown_name("model", name, known)
    raise type(err)(f"{err} Or pass a local model directory, a .gguf file or a hub id (org/name).")


# ---------------------------------------------------------------------------------------------------------
# Hugging Face hub ids, through huggingface_hub's own cache
# ---------------------------------------------------------------------------------------------------------
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")

HUB_ALLOW_PATTERNS = [
    "*.json",  # config, generation config, tokenizer / processor configs, safetensors index
    "*.safetensors",
    "*.txt",  # merges.txt, vocab.txt
    "*.model",  # sentencepiece (protobuf, not pickle)
    "*.tiktoken",
    "*.jinja",  # chat templates
]
"""What a hub download may fetch: never *.bin / *.pt / *.pth / *.ckpt / *.pkl (pickle) or *.py (remote code)."""
HUB_IGNORE_PATTERNS = ["original/*", "*consolidated*"]
"""Duplicate weights some repos carry (Meta's original checkpoint, Mistral's consolidated file)."""
_PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def is_hub_id(name: str) -> bool:
    """Whether name is a Hugging Face hub id: "org/name" that is not an existing local path."""
    return bool(_HUB_ID.fullmatch(name)) and not name.startswith(".") and not Path(name).expanduser().exists()


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or transformers' TRANSFORMERS_OFFLINE) as the user's environment sets it now."""
    from huggingface_hub import constants

    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE") or bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """huggingface_hub's cache directory, read from the environment now (as huggingface_hub reads it at import):
    HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    home = os.environ.get("HF_HOME") or str(Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hub_fetch_command(repo_id: str, revision: str | None = None) -> str:
    """The shell command that puts repo_id into the cache (the CLI of the installed huggingface_hub)."""
    major = int(importlib.metadata.version("huggingface_hub").split(".")[0])
    cli = "hf download" if major >= 1 else "huggingface-cli download"  # huggingface-cli before 1.0
    return f"{cli} {repo_id}" + (f" --revision {revision}" if revision else "")


def hub_snapshot(repo_id: str, revision: str | None = None) -> tuple[Path, str | None]:
    """(the local snapshot directory of repo_id, its commit hash): from the cache, downloading what is missing
    unless HF_HUB_OFFLINE is set. Only safetensors weights and config / tokenizer / processor files."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cache, offline = hub_cache_dir(), hub_offline()
    at = f" at revision {revision!r}" if revision else ""
    py_args = repr(repo_id) + (f", revision={revision!r}" if revision else "")
    try:
        if not offline:
            _refuse_pickled_only(repo_id, revision)
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            local_files_only=offline,
            allow_patterns=HUB_ALLOW_PATTERNS,
            ignore_patterns=HUB_IGNORE_PATTERNS,
        )
    except GatedRepoError as exc:
        raise ModelLoadError(
            f"{repo_id} is gated on the hub: accept its licence on huggingface.co, then log in (hf auth login)."
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelLoadError(
            f"No hub repository {repo_id!r} (or it is private: log in with hf auth login), and no local path "
            f"of that name. Known names: `interp models`."
        ) from exc
    except RevisionNotFoundError as exc:
        raise ModelLoadError(f"{repo_id} has no revision {revision!r}.") from exc
    except IncompleteSnapshotError as exc:
        raise ModelLoadError(
            f"The cached copy of {repo_id}{at} in {cache} is incomplete (an interrupted download?); complete it with "
            f"`{hub_fetch_command(repo_id, revision)}`."
        ) from exc
    except LocalEntryNotFoundError as exc:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
        raise ModelLoadError(
            f"{repo_id}{at} is not in the Hugging Face cache ({cache}) and {why}. Fetch it with "
            f"`{hub_fetch_command(repo_id, revision)}` (or in Python huggingface_hub.snapshot_download({py_args})), "
            "or load it with the network allowed: interp then downloads only its safetensors and config files."
        ) from exc
    except (HfHubHTTPError, OSError) as exc:
        raise ModelLoadError(f"Could not fetch {repo_id}{at} from the hub: {exc}") from exc
    directory = Path(folder)
    # snapshots/<commit>/ in the cache layout: the commit pins exactly which weights were scored.
    commit = directory.name if directory.parent.name == "snapshots" else None
    return directory, commit


def _refuse_pickled_only(repo_id: str, revision: str | None) -> None:
    """Before any download: a repo whose weights are only pickled (*.bin, *.pt…) is refused with the reason."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        files = HfApi().list_repo_files(repo_id, revision=revision)
    except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError):
        raise  # hub_snapshot words these
    except Exception as exc:  # no network, proxy, hub down: the cache may still hold the model, so go on
        log.debug("Listing %s failed (%s); trying the cache.", repo_id, exc)
        return
    if any(f.endswith(".safetensors") for f in files):
        return
    pickled = sorted(f for f in files if f.lower().endswith(_PICKLED))
    if pickled:
        raise ModelLoadError(
            f"{repo_id} has only pickled weights ({', '.join(pickled[:3])}{', …' if len(pickled) > 3 else ''}); "
            "pickle can run code when loaded, so interp loads safetensors only. Convert them with "
            "model.save_pretrained(dir, safe_serialization=True) in a sandbox and load that directory."
        )
    raise ModelLoadError(f"{repo_id} has no *.safetensors weights (files: {', '.join(files[:8])}).")


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
    return _wrap(hf_model, tokenizer, display_name, source, hf_name=hf_name)


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
    elif is_hub_id(name):
        path = hub_snapshot(name)[0]
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
    does the text and `LoadedModel.processor` keeps the processor for images. The caller's tokenizer is
    left as it is (the bridge adjusts a copy: pad token, padding side). An HF model that was wrapped before
    keeps its bridge: booting a second one would wrap the first bridge's components again.
    `interp.model.adopt.as_loaded_model` is the one-call form for any model object.
    """
    loaded = _wrap(hf_model, copy.deepcopy(tokenizer), name, source, hf_name)
    loaded.given_tokenizer = tokenizer
    return loaded


def _wrap(hf_model: Any, tokenizer: Any, name: str, source: str, hf_name: str | None = None) -> LoadedModel:
    """wrap_model for a tokenizer / processor this module owns (changed in place)."""
    processor = None
    if hasattr(tokenizer, "image_processor"):  # a multimodal processor (tokenizer + image processor)
        processor, tokenizer = tokenizer, tokenizer.tokenizer
    previous = cached_wrapper(hf_model)
    if previous is not None:
        bridge = previous.bridge
    else:
        architectures = getattr(hf_model.config, "architectures", None) or [type(hf_model).__name__]
        check_supported(architectures, Path(name))
        if getattr(hf_model.config, "architectures", None) is None:
            hf_model.config.architectures = [type(hf_model).__name__]
        bridge = boot_bridge(hf_model, tokenizer, hf_name or name)
    if tokenizer.pad_token is None:  # left padding needs a pad token; padded positions are masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    loaded = LoadedModel(bridge, hf_model, tokenizer, name, source)
    if processor is not None:
        bridge.processor = processor
        loaded.processor = processor
    return remember_wrapper(loaded)


def random_init_copy(model: LoadedModel, seed: int = 0) -> LoadedModel:
    """A randomly initialized model of the same architecture and config (same tokenizer), seeded."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = AutoModelForCausalLM.from_config(model.hf_model.config)
    hf = hf.to(device=model.device, dtype=model.dtype).eval()
    return _wrap(hf, model.tokenizer, f"{model.name} (random init, seed {seed})", source="random init")


def load_causal_lm(directory: Path, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """The raw transformers causal LM and tokenizer in a local directory (no bridge), e.g. for training code.

    Local files only, safetensors only, never remote code."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_hf_dir(directory)
    lm = AutoModelForCausalLM.from_pretrained(
        directory, local_files_only=True, trust_remote_code=False, use_safetensors=True, dtype=dtype
    )
    return lm, AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
