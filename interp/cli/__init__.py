"""`interp` command line: a thin layer over the library (every command calls the same functions).

interp models
interp metrics
interp scan ablation-kl --model default --prompts short --out r.json
interp show r.json --html r.html
interp ablate --model default --heads L3H1,L5H0 --kind zero --prompt "Why is the sky blue?"
interp app
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from interp.core.errors import InterpError

app = typer.Typer(
    name="interp",
    help="Score, inspect and intervene on the attention heads of real models, offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Wide enough for tables when output is piped (rich would assume 80 columns).
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Bad input prints one clear line (no traceback) and exits with status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InterpError as exc:
            err_console.print(f"[bold red]Error:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


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
            raise InterpError(f"--set expects key=value, got {pair!r}.")
        key, value = pair.split("=", 1)
        options[key.strip()] = value.strip()
    return options


def print_table(title: str, columns: list[str], rows: list[list[Any]], **table_options: Any) -> None:
    """A titled table; the title is printed on its own line so narrow tables never wrap it."""
    table = Table(**table_options)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[str(v) for v in row])
    console.print(f"[bold]{title}[/]", highlight=False)
    console.print(table)


def print_top(result: Any, k: int) -> None:
    top = result.top(k)
    rows = [[r.label, f"{r.score:.6g}"] for r in top.itertuples()]
    print_table(f"Top {len(rows)} heads by {result.metric} ({result.model})", ["head", "score"], rows)


def _register_commands() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}").register(app)


_register_commands()
