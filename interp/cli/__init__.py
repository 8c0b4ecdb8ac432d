"""`interp` command line: a thin layer over the library (every command calls the same functions).

interp models
interp metrics
interp scan ablation-kl --model default --prompts short --out r.json
interp show r.json --html r.html
interp ablate --model default --heads L3H1,L5H0 --kind zero --prompt "Why is the sky blue?"
interp app

Every command is registered through `friendly_errors`, which gives all of them the same guarantees:

- Options are checked before the command body runs, so nothing is computed and then lost to a bad option:
  float options must be finite; integer options >= 0, and the counts in `COUNT_OPTIONS` (--top, --limit,
  --steps, …) >= 1; `--port` in 1-65535. Output paths declared with `checked(typer.Option(...), writable_file(..))`
  / `writable_folder()` must be writable and of the right kind (a file path is not a folder, and so on).
- One error path: an `InterpError` becomes one line "Error: …" and exit status 1, or 2 for a `UsageError`
  (the command line itself is wrong); the foreseeable OS errors (a file that cannot be read or written, a
  network address that cannot be reached) become one line with exit status 1; Ctrl+C and SIGTERM stop with
  130 / 143 after the `finally` blocks ran (temporary files removed, checkpoints flushed, child processes
  stopped). `interp --debug …` or INTERP_DEBUG=1 prints the traceback as well. Anything else is a bug and
  keeps its traceback.
- User text is never console markup: the consoles print plain text (model names, head labels, prompts,
  generations and file names may contain "[/]" or "[bold]" and are printed as they are).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import os
import pkgutil
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from interp.core import validate
from interp.core.errors import InterpError, UsageError

app = typer.Typer(
    name="interp",
    help="Score, inspect and intervene on the attention heads of real models, offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Wide enough for tables when output is piped (rich would assume 80 columns). markup/emoji off: text from
# users and models ("[/x]", ":smile:") is printed as it is, never interpreted (or crashing the printer).
console = Console(
    width=None if sys.stdout.isatty() else 160, markup=False, emoji=False, highlight=False, soft_wrap=True
)
err_console = Console(
    stderr=True, width=None if sys.stderr.isatty() else 160, markup=False, emoji=False, highlight=False, soft_wrap=True
)
F = TypeVar("F", bound=Callable[..., Any])

# Integer options that count something: 0 or a negative value is refused (never read as "all").
COUNT_OPTIONS = frozenset(
    {
        "top", "limit", "n", "n_test", "steps", "max_new_tokens", "harmless_max_new_tokens", "top_tokens",
        "batch_size", "gen_batch_size", "workers", "threads", "harmless_limit", "candidates", "top_k",
        "max_objects", "scan", "eval_", "harmless", "heads",
    }
)  # fmt: skip
Check = Callable[[str, Any], Any]

_state = {"debug": False}


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback with any error (or INTERP_DEBUG=1)."),
) -> None:
    _state["debug"] = debug


def debugging() -> bool:
    return _state["debug"] or os.environ.get("INTERP_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


# ---- declared checks on options -----------------------------------------------------------------------------
def checked(info: Any, check: Check) -> Any:
    """Attach a check to a typer.Option / typer.Argument; `friendly_errors` runs it before the command."""
    info.interp_check = check
    return info


def writable_file(*suffixes: str) -> Check:
    """An output file path (optionally with one of `suffixes`): not a folder, in a writable folder."""
    return lambda flag, value: validate.output_file(value, flag, suffixes or None)


def writable_folder() -> Check:
    """An output folder: an existing writable folder, or one that can be created."""
    return lambda flag, value: validate.output_dir(value, flag)


def at_least(minimum: int) -> Check:
    return lambda flag, value: validate.integer(flag, value, minimum=minimum)


def in_range(minimum: float, maximum: float) -> Check:
    return lambda flag, value: validate.number(flag, value, minimum=minimum, maximum=maximum)


def _flag(name: str, info: Any) -> str:
    if isinstance(info, typer.models.ArgumentInfo):
        return name.upper()
    decls = [d for d in (info.param_decls or ()) if d.startswith("--")]
    return decls[0].split("/")[0] if decls else "--" + name.rstrip("_").replace("_", "-")


def _default_check(name: str, value: Any) -> Check | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return lambda flag, v: validate.number(flag, v)  # finite
    if isinstance(value, int):
        if name == "port":
            return lambda flag, v: validate.integer(flag, v, minimum=1, maximum=65535)
        return at_least(1 if name in COUNT_OPTIONS else 0)
    return None


def check_options(fn: Callable[..., Any], values: dict[str, Any]) -> None:
    """Run the declared and default checks of fn's options on their values (usage checks before paths)."""
    later = []
    for name, param in inspect.signature(fn).parameters.items():
        info, value = param.default, values.get(name)
        if value is None or not isinstance(info, typer.models.ParameterInfo):
            continue
        items = value if isinstance(value, list | tuple) else [value]
        flag = _flag(name, info)
        declared = getattr(info, "interp_check", None)
        for item in items:
            default = _default_check(name, item)
            if default is not None:
                default(flag, item)
            if declared is not None:
                later.append((declared, flag, item))
    for check, flag, item in later:
        check(flag, item)


# ---- one error path -------------------------------------------------------------------------------------------
class Stopped(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so every `finally` runs (cleanup, checkpoint flush, child stop)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def fail(message: str, code: int) -> typer.Exit:
    """Print one error line (plain text) and return the Exit to raise."""
    if debugging():
        traceback.print_exc()
    err_console.print(Text.assemble(("Error: ", "bold red"), message))
    return typer.Exit(code)


def os_error_message(exc: OSError) -> str:
    reason = exc.strerror or str(exc) or type(exc).__name__
    files = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    return f"{reason}: {files}" if files else reason


def friendly_errors(fn: F) -> F:
    """Check options first, then run fn; bad input prints one line (no traceback) and exits 1 (2: usage)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with signals_as_exceptions():
                check_options(fn, kwargs)
                return fn(*args, **kwargs)
        except UsageError as exc:
            raise fail(str(exc), 2) from None
        except InterpError as exc:
            raise fail(str(exc), 1) from None
        except OSError as exc:  # a file we cannot read or write, a disk full, an unreachable address
            raise fail(os_error_message(exc), 1) from None
        except MemoryError:
            raise fail("Out of memory: use fewer prompts (--limit) or a smaller --batch-size.", 1) from None
        except Stopped as exc:
            raise fail(f"Stopped by signal {signal.Signals(exc.signum).name}.", 128 + exc.signum) from None
        except KeyboardInterrupt:
            raise fail("Interrupted.", 130) from None

    return wrapper  # type: ignore[return-value]


def run_child(cmd: list[str], env: dict[str, str] | None = None, grace_s: float = 10.0) -> int:
    """Run a child process to its end; when we are stopped first (Ctrl+C, SIGTERM via `friendly_errors`), stop
    it too (SIGTERM, then SIGKILL after grace_s), so no server is left running and listening."""
    child = subprocess.Popen(cmd, env=env)
    try:
        while True:
            # Wait in short slices, not one blocking waitpid: a signal the OS hands to another thread (tqdm's
            # monitor, a server thread) does not interrupt the main thread's waitpid, so its Python handler
            # would only run when the child exits. Between slices the main thread runs the pending handler.
            try:
                return child.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(grace_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


DEVICE_HELP = "auto (CUDA when this torch sees a GPU, else CPU) | cpu | cuda | cuda:N."
DTYPE_HELP = "float32 (default) | bfloat16 | float16."


def device_option() -> Any:
    """--device for every command that loads a model (one definition, so they all read the same)."""
    return typer.Option("auto", "--device", help=DEVICE_HELP)


def dtype_option(default: str | None = None) -> Any:
    """--dtype for every command that loads a model."""
    return typer.Option(default, "--dtype", help=DTYPE_HELP)


MODEL_HELP = "Model name (`interp models`), local directory, .gguf file, or hub id org/name."


def parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--set expects key=value, got {pair!r}.")
        key, value = pair.split("=", 1)
        options[key.strip()] = value.strip()
    return options


# ---- printing (plain text only) -------------------------------------------------------------------------------
def print_table(title: str, columns: list[str], rows: list[list[Any]], **table_options: Any) -> None:
    """A titled table; the title is printed on its own line so narrow tables never wrap it."""
    table = Table(**table_options)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[str(v) for v in row])
    console.print(Text(title, style="bold"))
    console.print(table)


def print_top(result: Any, k: int) -> None:
    top = result.top(k)
    rows = [[r.label, f"{r.score:.6g}"] for r in top.itertuples()]
    print_table(f"Top {len(rows)} heads by {result.metric} ({result.model})", ["head", "score"], rows)


def wrote(path: Path | str) -> None:
    console.print(f"Wrote {path}")


def _register_commands() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}").register(app)


_register_commands()
