"""Real models for real users: hub ids through huggingface_hub's cache (offline here: a cache written by the test),
no process-wide side effects at import, self-contained HTML, --device / --dtype, direction-aware top heads.

Nothing here reaches the network: the hub cache is a temporary directory laid out as huggingface_hub writes it
(models--org--name/refs/main + snapshots/<commit>/), and the online code paths run against a stubbed HfApi.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import interp
from interp.cli import app
from interp.core.errors import ModelLoadError
from interp.core.results import HeadScores
from interp.model import loading
from interp.model.tiny import build_tiny
from interp.model.zoo.tiny_llava import build_tiny_llava

PROMPTS = ["hello world", "the cat sat on the mat", "abc"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def write_to_hub_cache(cache: Path, repo_id: str, model, tokenizer, commit: str = COMMIT) -> Path:
    """What `hf download repo_id` leaves behind: refs/main naming the commit, the files under snapshots/<commit>/."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline huggingface_hub cache in tmp_path (HF_HUB_CACHE, HF_HUB_OFFLINE=1 for this test only)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture
def tiny_in_cache(hub_cache: Path) -> Path:
    return write_to_hub_cache(hub_cache, "org/tiny-llama", *build_tiny("llama"))


# ---------------------------------------------------------------------------------------------------------
# Hub ids
# ---------------------------------------------------------------------------------------------------------
def test_a_hub_id_loads_from_the_cache_offline_and_scores_like_its_directory(tiny_in_cache):
    by_id = interp.load_model("org/tiny-llama")
    by_path = interp.load_model(str(tiny_in_cache))
    assert by_id.name == "org/tiny-llama" and by_id.source == f"hub org/tiny-llama@{COMMIT}"
    a = interp.scan("ablation-kl", by_id, PROMPTS, progress=False)
    b = interp.scan("ablation-kl", by_path, PROMPTS, progress=False)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert np.nanmax(a.scores) > 0  # a real score, not two empty results
    again = interp.load_model("org/tiny-llama", revision=COMMIT)  # a commit hash pins the snapshot
    np.testing.assert_array_equal(interp.scan("ablation-kl", again, PROMPTS, progress=False).scores, a.scores)


def test_a_hub_id_from_the_cli_scores_like_its_directory(tiny_in_cache, tmp_path):
    by_id, by_path = tmp_path / "id.json", tmp_path / "path.json"
    for model, out in (("org/tiny-llama", by_id), (str(tiny_in_cache), by_path)):
        code, output = cli("scan", "ablation-kl", "--model", model, "--prompt", "hello world", "--prompt", "abc",
                           "--out", str(out), "--no-progress", "--device", "cpu", "--dtype", "float32")  # fmt: skip
        assert code == 0, output
    a, b = HeadScores.load(by_id), HeadScores.load(by_path)
    assert a.model == "org/tiny-llama"
    np.testing.assert_array_equal(a.scores, b.scores)


def test_a_llava_hub_id_loads_with_its_processor_and_scores_like_its_directory(hub_cache):
    hf, processor = build_tiny_llava()
    snapshot = write_to_hub_cache(hub_cache, "org/tiny-llava", hf, processor)
    by_id, by_path = interp.load_model("org/tiny-llava"), interp.load_model(str(snapshot))
    assert by_id.is_multimodal and by_id.processor is not None
    options = dict(images="scenes", n_images=2, template="raw", progress=False)
    a = interp.scan("vhd", by_id, ["what is here?"], **options)
    b = interp.scan("vhd", by_path, ["what is here?"], **options)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert np.nanmax(a.scores) > 0


def test_an_uncached_hub_id_offline_is_a_one_line_error_naming_the_cache_and_the_fetch_command(hub_cache):
    with pytest.raises(ModelLoadError) as info:
        interp.load_model("org/not-downloaded")
    message = str(info.value)
    assert "\n" not in message
    assert f"not in the Hugging Face cache ({hub_cache})" in message and "HF_HUB_OFFLINE is set" in message
    assert "download org/not-downloaded`" in message  # `hf download …` (huggingface-cli before hub 1.0)
    assert "snapshot_download('org/not-downloaded')" in message
    code, output = cli("scan", "ablation-kl", "--model", "org/not-downloaded", "--no-progress")
    assert code == 1 and "Traceback" not in output and "hf download org/not-downloaded" in output.replace("\n", " ")


def test_a_revision_that_is_not_cached_is_named_and_revision_needs_a_hub_id(tiny_in_cache):
    with pytest.raises(ModelLoadError, match="at revision 'v2'.*--revision v2"):
        interp.load_model("org/tiny-llama", revision="v2")
    with pytest.raises(ModelLoadError, match="revision='v2' is for hub ids"):
        interp.load_model("tiny-llama", revision="v2")


def test_a_hub_id_is_not_mistaken_for_a_path_and_an_existing_directory_wins(tmp_path, monkeypatch):
    assert loading.is_hub_id("Qwen/Qwen2.5-0.5B-Instruct") and loading.is_hub_id("meta-llama/Llama-2-7b-chat-hf")
    for not_an_id in ("./org/name", "/abs/path", "a/b/c", "model.gguf", "default"):
        assert not loading.is_hub_id(not_an_id)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert not loading.is_hub_id("org/name")  # a local directory of that name is loaded as a directory


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch, hub_cache: Path) -> Path:
    """The user's environment allows downloads (the hub itself is stubbed: nothing leaves this machine)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert not loading.hub_offline()
    return hub_cache


def test_a_repo_with_only_pickled_weights_is_refused_before_anything_downloads(online, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setattr(
        HfApi, "list_repo_files", lambda self, repo_id, revision=None: ["config.json", "pytorch_model.bin"]
    )

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded a repo that has only pickled weights")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_download)
    with pytest.raises(ModelLoadError, match=r"only pickled weights \(pytorch_model.bin\).*safetensors only"):
        interp.load_model("org/pickled")


def test_a_download_fetches_safetensors_and_configs_only_never_pickles_or_code(online, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    repo = [
        "config.json", "generation_config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json", "tokenizer.json",
        "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "merges.txt", "vocab.json",
        "chat_template.jinja", "preprocessor_config.json", "modeling_custom.py", "original/consolidated.00.pth",
        "consolidated.safetensors", "training_args.bin", "optimizer.pt", "README.md",
    ]  # fmt: skip
    calls = []
    snapshot = write_to_hub_cache(online, "org/fetched", *build_tiny("llama"))

    def fake_download(repo_id, **kwargs):
        calls.append(kwargs)
        return str(snapshot)

    monkeypatch.setattr(HfApi, "list_repo_files", lambda self, repo_id, revision=None: repo)
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_download)
    model = interp.load_model("org/fetched")
    assert model.source == f"hub org/fetched@{COMMIT}"
    (kwargs,) = calls
    assert kwargs["local_files_only"] is False and kwargs["cache_dir"] == online
    fetched = set(
        filter_repo_objects(repo, allow_patterns=kwargs["allow_patterns"], ignore_patterns=kwargs["ignore_patterns"])
    )
    assert not any(f.endswith((".bin", ".pt", ".pth", ".py")) for f in fetched)
    assert {"config.json", "model-00001-of-00002.safetensors", "tokenizer.json", "tokenizer.model", "merges.txt",
            "chat_template.jinja", "preprocessor_config.json"} <= fetched  # fmt: skip
    assert "consolidated.safetensors" not in fetched  # a duplicate copy of the weights


# ---------------------------------------------------------------------------------------------------------
# No side effects at import
# ---------------------------------------------------------------------------------------------------------
IMPORT_CHECK = r"""
import json, os, sys
# What interp's own dependencies do on import (scikit-learn sets KMP_* for OpenMP, torch._dynamo sets
# TORCHINDUCTOR_CACHE_DIR) is theirs: import them first, then measure what importing interp adds.
import torch, transformers, transformer_lens, sklearn, huggingface_hub, pandas, plotly, typer
from transformers import PreTrainedModel
from transformer_lens.model_bridge import TransformerBridge
def torch_state():
    return [torch.get_num_threads(), str(torch.get_default_dtype()), torch.is_grad_enabled(),
            torch.are_deterministic_algorithms_enabled(), torch.get_float32_matmul_precision(),
            torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32]
env, state = dict(os.environ), torch_state()
import interp, interp.cli, interp.app.support, interp.app.launch
print(json.dumps({"env_changed": sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k)),
                  "torch_changed": state != torch_state(),
                  "offline_vars": [k for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if k in os.environ]}))
"""


def test_importing_interp_changes_no_environment_variable_and_no_torch_setting():
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", IMPORT_CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"env_changed": [], "torch_changed": False, "offline_vars": []}


# ---------------------------------------------------------------------------------------------------------
# Self-contained HTML
# ---------------------------------------------------------------------------------------------------------
EXTERNAL_SCRIPT = re.compile(r"""<script[^>]*\ssrc\s*=\s*["']?\s*(https?:)?//""", re.IGNORECASE)


def assert_self_contained(page: str) -> None:
    assert not EXTERNAL_SCRIPT.search(page), EXTERNAL_SCRIPT.search(page).group(0)
    assert len(page) > 1_000_000 and "Plotly.newPlot" in page  # plotly.js itself is in the file


def test_show_html_embeds_plotly_and_loads_no_external_script(tmp_path):
    result = HeadScores(np.arange(12.0).reshape(3, 4), metric="ablation-kl", model="m")
    result.save(tmp_path / "r.json")
    code, output = cli("show", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"))
    assert code == 0, output
    assert_self_contained((tmp_path / "r.html").read_text(encoding="utf-8"))


def test_entropy_report_html_and_app_downloads_are_self_contained(tmp_path, tiny_llama):
    from interp.app import support as sup

    entropy = interp.scan("entropy", tiny_llama, PROMPTS, progress=False)
    entropy.save(tmp_path / "e.json")
    code, output = cli("entropy", "report", str(tmp_path / "e.json"), "--html", str(tmp_path / "e.html"))
    assert code == 0, output
    page = (tmp_path / "e.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert page.count("Plotly.newPlot") == 3 and page.count("plotly.js v") == 1  # three figures, one plotly.js
    assert_self_contained(sup.figure_html(entropy.heatmap()))


# ---------------------------------------------------------------------------------------------------------
# Direction-aware top heads, from a real scan to the CLI's printout
# ---------------------------------------------------------------------------------------------------------
def test_top_of_an_ablation_effect_result_lists_the_most_negative_heads_first(tiny_llama, tmp_path):
    result = interp.scan("ablation-effect", tiny_llama, PROMPTS, progress=False)
    top = result.top(4)
    assert list(top["score"]) == sorted(top["score"])  # ascending: most negative first
    assert top["score"].iloc[0] == np.nanmin(result.scores) < 0
    result.save(tmp_path / "effect.json")
    code, output = cli("show", str(tmp_path / "effect.json"), "--top", "4")
    assert code == 0, output
    printed = re.findall(r"L\d+H\d+", output)
    assert printed == list(top["label"])


# ---------------------------------------------------------------------------------------------------------
# --device / --dtype
# ---------------------------------------------------------------------------------------------------------
LOADING_COMMANDS = [
    ["scan"], ["ablate"], ["app"], ["probe"], ["ray-sweep"], ["safety", "run"], ["safety", "sahara"],
    ["safety", "asr"], ["vision", "generate"], ["vision", "experiment"],
]  # fmt: skip


@pytest.mark.parametrize("command", LOADING_COMMANDS, ids=" ".join)
def test_every_command_that_loads_a_model_takes_device_and_dtype(command):
    code, output = cli(*command, "--help")
    assert code == 0, output
    assert "--device" in output and "--dtype" in output


def test_device_auto_picks_cuda_only_when_present_and_cuda_without_it_is_a_clear_error():
    assert loading.resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert loading.resolve_device(None) == loading.resolve_device("auto")
    assert loading.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ModelLoadError, match="Unknown device 'gpu0': use auto | cpu | cuda | cuda:N"):
        loading.resolve_device("gpu0")
    if torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="only .* GPU"):
            loading.resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        reason = "CPU-only build" if torch.version.cuda is None else "sees no GPU"
        with pytest.raises(ModelLoadError, match=reason):
            loading.resolve_device("cuda:0")
        code, output = cli("scan", "ablation-kl", "--model", "tiny-llama", "--device", "cuda", "--no-progress")
        assert code == 1 and reason in output.replace("\n", " ") and "Traceback" not in output


def test_dtype_reaches_the_model_from_the_cli(tmp_path):
    out = tmp_path / "bf16.json"
    code, output = cli("scan", "ablation-kl", "--model", "tiny-llama", "--prompt", "hello", "--dtype", "bfloat16",
                       "--device", "auto", "--out", str(out), "--no-progress")  # fmt: skip
    assert code == 0, output
    assert HeadScores.load(out).provenance["dtype"] == "torch.bfloat16"
    code, output = cli("scan", "ablation-kl", "--model", "tiny-llama", "--dtype", "float64", "--no-progress")
    assert code == 2 and 'Unknown dtype "float64"' in output


def test_without_a_network_a_cached_model_still_loads_when_downloads_are_allowed(online, monkeypatch):
    """HF_HUB_OFFLINE unset but the hub unreachable: the pre-download check is skipped, the cache decides."""
    from huggingface_hub import HfApi

    def unreachable(self, repo_id, revision=None):
        raise ConnectionError("no route to huggingface.co")

    snapshot = write_to_hub_cache(online, "org/cached", *build_tiny("llama"))
    monkeypatch.setattr(HfApi, "list_repo_files", unreachable)
    monkeypatch.setattr("huggingface_hub.snapshot_download", lambda repo_id, **kwargs: str(snapshot))
    assert interp.load_model("org/cached").source == f"hub org/cached@{COMMIT}"
