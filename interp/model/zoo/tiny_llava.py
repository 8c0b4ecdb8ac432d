"""Tiny random LLaVA models built in code: seconds to build, for exact tests and planted ground truth.

A SigLIP vision tower (32 x 32 pixels, 8 x 8 patches -> 16 image tokens, or a CLIP tower with its CLS token
dropped as in LLaVA-1.5), LLaVA's projector, and the foundation's tiny Llama (3 layers x 4 heads, 2 KV heads)
with the byte tokenizer plus an <image> token. Seeded: the same arguments always give the same weights.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from interp.model.registry import ModelEntry, register_model
from interp.model.tiny import TINY_LLAMA, byte_tokenizer

TINY_VISION: dict[str, Any] = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
)


def build_tiny_llava(
    seed: int = 0, vision: Literal["siglip", "clip"] = "siglip", next_version: bool = False, **text_overrides: Any
) -> tuple[Any, Any]:
    """(LlavaForConditionalGeneration or LlavaNextForConditionalGeneration, its processor), seeded.

    vision: "siglip" (every patch is an image token) or "clip" (CLS token dropped: LLaVA-1.5's "default").
    next_version: build LLaVA-NeXT (1.6) instead (any-resolution tiling; more image tokens per image).
    text_overrides: changes to the tiny Llama config (e.g. num_key_value_heads=4).
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tokenizer = byte_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    text = LlamaConfig(
        **{
            **TINY_LLAMA,
            "vocab_size": len(tokenizer),
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
            "tie_word_embeddings": False,
            **text_overrides,
        }
    )
    strategy = "default" if vision == "clip" else "full"
    if vision == "clip":
        vision_config: Any = CLIPVisionConfig(**TINY_VISION)
    else:
        from transformers import SiglipVisionConfig

        vision_config = SiglipVisionConfig(**TINY_VISION, vision_use_head=False)
    n_patches = (TINY_VISION["image_size"] // TINY_VISION["patch_size"]) ** 2
    common = dict(
        vision_config=vision_config,
        text_config=text,
        image_token_index=image_id,
        vision_feature_select_strategy=strategy,
        vision_feature_layer=-1,
    )
    if next_version:
        return _tiny_next(common, tokenizer, seed)
    config = LlavaConfig(**common, image_seq_length=n_patches, architectures=["LlavaForConditionalGeneration"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    _spread_init(model, seed)
    image_processor = SiglipImageProcessorPil(
        size={"height": TINY_VISION["image_size"], "width": TINY_VISION["image_size"]},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    from transformers import LlavaProcessor

    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=TINY_VISION["patch_size"],
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=1 if vision == "clip" else 0,
        image_token="<image>",
    )
    return model.eval(), processor


def _tiny_next(common: dict[str, Any], tokenizer: Any, seed: int) -> tuple[Any, Any]:
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    size = TINY_VISION["image_size"]
    config = LlavaNextConfig(
        **common,
        image_grid_pinpoints=[[size, size], [size, 2 * size], [2 * size, size]],
        architectures=["LlavaNextForConditionalGeneration"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaNextForConditionalGeneration(config)
    _spread_init(model, seed)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_grid_pinpoints=config.image_grid_pinpoints,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=TINY_VISION["patch_size"],
        vision_feature_select_strategy=common["vision_feature_select_strategy"],
        num_additional_image_tokens=0,
        image_token="<image>",
    )
    return model.eval(), processor


def _spread_init(model: Any, seed: int) -> None:
    """A wider init spread (as interp.model.tiny does) so heads differ and rankings are meaningful; still seeded."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        for name, param in model.named_parameters():
            if param.ndim == 2 and "embed" not in name and "language_model" in name:
                param.normal_(0.0, 0.15)
            elif param.ndim == 2 and "multi_modal_projector" in name:
                param.normal_(0.0, 0.3)


register_model(
    ModelEntry(
        name="tiny-llava",
        description="random LLaVA: SigLIP tower (16 image tokens) + Llama 3 layers x 4 heads (2 KV), seed 0",
        source="built in code",
        size="~0.3M params",
        locate=build_tiny_llava,
    )
)
