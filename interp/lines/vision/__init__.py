"""An offline vision-language model and the scenes it is trained and evaluated on.

No vision-language model ships in any package, so the toolkit builds a small one in LLaVA layout
(transformers' `LlavaForConditionalGeneration`): a tiny SigLIP-style vision tower trained here, LLaVA's
two-layer projector, and the default SmolLM2-135M-Instruct language model (plus small LoRA deltas).
Because it is a real LLaVA, every vision analyzer runs on it through the same code path as on a
LLaVA-1.5 / LLaVA-NeXT checkpoint from a local directory.

- `interp.lines.vision.scenes`: procedurally generated scenes (coloured shapes with known positions), their
  ground-truth object lists, questions, captions, and the CHAIR hallucination metrics.
- `interp.model.images`: images from files, folders or arrays.
- `interp.model.zoo.scenes_vlm`: the scenes-VLM's LLaVA config and processor, and assembling it from its parts.
- `interp.lines.vision.train`: `interp vision train` trains the small parts (one command, seeded).
- `interp.model.zoo.tiny_llava`: tiny random LLaVA models for tests.
- `interp.lines.vision.experiment`: QA accuracy, VHD-head ablation and CHAIR with/without VHR.
"""
