"""Prompt sets: reading prompt files, the built-in sets in data/prompts/, and prompt templates.

A prompts file is either plain text (one prompt per line; blank lines and lines starting with '#' are
skipped) or JSONL with a "prompt" field per line. Templates turn a user prompt into model input:

- "chat":  the tokenizer's chat template with a generation prompt (instruct models);
- "raw":   the text as it is;
- "paper": the safety-heads released code's format byte for byte, "## Query:{prompt}\\n## Answer:" (no space
           after the colon; lib/Sahara/attribution.py of github ydyjya/SafetyHeadAttribution);
- "query": the same with a space after the colon, "## Query: {prompt}\\n## Answer:" (our earlier reading of
           the paper; kept as an option);
- "auto":  "chat" when the tokenizer has a chat template, else "raw".
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from interp.core import validate
from interp.core.config import TemplateName
from interp.core.errors import PromptError, UsageError, unknown_name

QUERY_TEMPLATE = "## Query: {prompt}\n## Answer:"
PAPER_TEMPLATE = "## Query:{prompt}\n## Answer:"  # byte for byte as the released code formats prompts
TEXT_TEMPLATES = {"query": QUERY_TEMPLATE, "paper": PAPER_TEMPLATE}
TEMPLATES: tuple[str, ...] = ("auto", "chat", "raw", "query", "paper")


def apply_text_template(kind: str, prompt: str) -> str:
    """A plain-text template ("query", "paper") applied to a prompt; "raw" (and any other kind) leaves it as is."""
    template = TEXT_TEMPLATES.get(kind)
    return template.format(prompt=prompt) if template is not None else prompt


def data_dir() -> Path:
    """The data/ folder: $INTERP_DATA_DIR, the source checkout's data/, or the copy inside the wheel."""
    env = os.environ.get("INTERP_DATA_DIR")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parents[1]  # interp/ (this file is interp/core/prompts.py)
    for candidate in (package.parent / "data", package / "_data"):
        if candidate.is_dir():
            return candidate
    raise PromptError("Cannot find the data/ folder; set INTERP_DATA_DIR to its location.")


def builtin_sets() -> dict[str, Path]:
    """Named prompt sets shipped in data/prompts/ (file stem -> path)."""
    folder = data_dir() / "prompts"
    return {p.stem: p for p in sorted(folder.glob("*")) if p.suffix in (".txt", ".jsonl")}


def load_prompts(source: str | os.PathLike[str], limit: int | None = None) -> list[str]:
    """Read prompts from a file path or a built-in set name (e.g. "short"); limit: the first N (N >= 1)."""
    if not isinstance(source, str | os.PathLike):
        raise UsageError(f"Prompts source must be a file path or a set name, got {type(source).__name__}.")
    limit = validate.limit(limit)  # 0 or -3 would silently mean "all" or "all but the last three"
    path = Path(source)
    if not path.exists() and not path.is_symlink():
        sets = builtin_sets()
        if str(source) in sets:
            path = sets[str(source)]
        elif path.suffix or os.sep in str(source):
            raise PromptError(f"Prompts file {path} does not exist.")
        else:
            raise unknown_name("prompt set", str(source), sets) from None
    path = validate.regular_file(path, "Prompts file", PromptError)  # never /dev/zero or a FIFO
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PromptError(f"Prompts file {path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise PromptError(f"Prompts file {path} cannot be read: {exc.strerror}.") from exc
    prompts = _parse_jsonl(text, path) if path.suffix == ".jsonl" else _parse_lines(text)
    if not prompts:
        raise PromptError(
            f'Prompts file {path} holds no prompts: write one prompt per line, or JSONL with a "prompt" field.'
        )
    return prompts[:limit] if limit else prompts


def _parse_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _parse_jsonl(text: str, path: Path) -> list[str]:
    prompts = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptError(f"{path}, line {i}: not valid JSON ({exc.msg}).") from exc
        except RecursionError:
            raise PromptError(f"{path}, line {i}: JSON nested too deeply.") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise PromptError(f'{path}, line {i}: expected an object with a string "prompt" field.')
        prompts.append(record["prompt"])
    return prompts


def check_prompts(prompts: Sequence[str] | Iterable[str] | str) -> list[str]:
    """A list of prompts from a string (one prompt) or any iterable of strings (a generator too); an empty
    list, non-strings and empty prompts are refused, naming the offending index."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Iterable) or isinstance(prompts, bytes | dict):
        raise PromptError(f"Prompts must be a list of strings, got {type(prompts).__name__}.")
    prompts = list(prompts)
    if not prompts:
        raise PromptError("No prompts given: pass at least one prompt.")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise PromptError(f"Prompt {i} is {type(p).__name__}, expected a string.")
        if not p.strip():
            raise PromptError(f"Prompt {i} is empty.")
    return prompts


def resolve_template(template: TemplateName, has_chat_template: bool) -> str:
    if template not in TEMPLATES:
        raise unknown_name("template", str(template), TEMPLATES)
    if template == "auto":
        return "chat" if has_chat_template else "raw"
    if template == "chat" and not has_chat_template:
        raise PromptError('This model\'s tokenizer has no chat template; use template "raw", "query" or "paper".')
    return template
