"""An offline vision-language model and the scenes it is trained and evaluated on.

No vision-language model ships in any package, so the toolkit builds a small one in LLaVA layout
(transformers' `LlavaForConditionalGeneration`): a tiny SigLIP-style vision tower trained here, LLaVA's
two-layer projector, and the default SmolLM2-135M-Instruct language model (plus small LoRA deltas).
Because it is a real LLaVA, every vision analyzer runs on it through the same code path as on a
LLaVA-1.5 / LLaVA-NeXT checkpoint from a local directory.

- `interp.vlm.scenes`: procedurally generated scenes (coloured shapes with known positions), their
  ground-truth object lists, questions, captions, and the CHAIR hallucination metrics.
- `interp.vlm.images`: images from files, folders or arrays.
- `interp.vlm.build`: the scenes-VLM's LLaVA config and processor, and assembling it from its parts.
- `interp.vlm.train`: `python -m interp.vlm.train` trains the small parts (one command, seeded).
- `interp.vlm.tiny`: tiny random LLaVA models for tests.
- `interp.vlm.experiment`: QA accuracy, VHD-head ablation and CHAIR with/without VHR.
"""
