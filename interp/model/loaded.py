"""The loaded model and its token batches: what every analyzer receives.

`LoadedModel` holds the TransformerBridge, the HF model, the tokenizer (and a VLM's processor) and the shape
facts (n_layers, n_heads, d_head, ...); it formats and tokenizes prompts (left padding, so the last prompt
token sits at position -1 in every row).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from interp.core.errors import PromptError
from interp.core.heads import Head, HeadLike, all_heads, parse_heads
from interp.core.prompts import apply_text_template, check_prompts, resolve_template


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


WRAPPER_ATTR = "_interp_loaded_model"
"""Attribute on a user's TransformerBridge / HF model that keeps its LoadedModel: set once, so a second call
finds the same wrapper instead of booting a second bridge over an HF model the first bridge already changed
in place. An attribute (not a global weak map) so the wrapper lives exactly as long as the object does."""


def cached_wrapper(obj: Any) -> LoadedModel | None:
    """The LoadedModel already made for a bridge / HF model, or None.

    Read from the instance's own __dict__: TransformerBridge.__getattr__ falls back to its HF model's
    attributes, which must not count as the bridge's own cache entry."""
    found = getattr(obj, "__dict__", {}).get(WRAPPER_ATTR)
    return found if isinstance(found, LoadedModel) else None


def remember_wrapper(loaded: LoadedModel) -> LoadedModel:
    """Record `loaded` on its bridge and HF model (see WRAPPER_ATTR); returns it."""
    for obj in (loaded.bridge, loaded.hf_model):
        vars(obj)[WRAPPER_ATTR] = loaded  # plain instance attribute: not a parameter, buffer or submodule
    return loaded


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
        self.given_tokenizer: Any = None  # the caller's own tokenizer / processor object, when interp made a copy

    def uses_tokenizer(self, tokenizer: Any) -> bool:
        """Whether `tokenizer` is this model's tokenizer or processor (or the caller's object they were copied from)."""
        return any(tokenizer is t for t in (self.tokenizer, self.processor, self.given_tokenizer) if t is not None)

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
    def value_bias_layers(self) -> list[int] | None:
        """Layers whose heads have a non-zero value bias: there zero ablation depends on whether value biases
        are folded (load_model(..., fold_value_biases=True); docs/transformerlens.md). None: cannot tell."""
        from interp.model.bridge import value_bias_layers

        return value_bias_layers(self.bridge)

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
        """The model input for a user prompt under a template (see interp.core.prompts)."""
        kind = resolve_template(template, self.has_chat_template)  # type: ignore[arg-type]
        if kind == "chat":
            messages = [{"role": "user", "content": prompt}]
            if system_prompt is not None:
                messages.insert(0, {"role": "system", "content": system_prompt})
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return apply_text_template(kind, prompt)

    def tokenize(
        self, prompts: Sequence[str] | str, template: str = "auto", system_prompt: str | None = None
    ) -> TokenBatch:
        """Format and tokenize prompts into one left-padded batch; over-long prompts are an error."""
        prompts = check_prompts(prompts)
        kind = resolve_template(template, self.has_chat_template)  # type: ignore[arg-type]
        texts = [self.format_prompt(p, kind, system_prompt) for p in prompts]
        # A chat template writes its own special tokens; raw, query and paper text get the tokenizer's (e.g. BOS).
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
        return prefix + apply_text_template(kind, prompt)

    def tokenize_images(
        self, prompts: Sequence[str] | str, images: Sequence[Any], template: str = "auto"
    ) -> ImageBatch:
        """Format and tokenize (prompt, image) pairs into one left-padded ImageBatch.

        images: one per prompt: a path, a PIL image, an [H, W, 3] array, or None for a text-only row.
        The processor expands each image placeholder into the model's image tokens.
        """
        from interp.model.images import load_image

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
