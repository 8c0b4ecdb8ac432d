"""Error types with messages that say what was wrong, what is allowed, and what to do.

Every error the toolkit raises on bad user input is an `InterpError` (a `ValueError`), so the CLI and the
app can catch one type and show its message instead of a traceback. A `UsageError` is the subset where the
command itself is wrong (an option out of range, not finite, an unknown name, a malformed label): the CLI
exits with status 2 for those, and 1 for every other `InterpError` (a file, model or folder that is missing,
corrupt or unwritable), as command-line tools conventionally do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InterpError(ValueError):
    """Base class for errors caused by user input (bad names, paths, labels, files)."""


class UsageError(InterpError):
    """An option or argument that is wrong on its own: out of range, not finite, malformed, conflicting."""


class UnknownNameError(UsageError, KeyError):
    """A name (model, metric, option) that is not in a registry."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class ModelLoadError(InterpError):
    """A model that cannot be loaded: missing path, missing package, unsupported architecture."""


class HeadLabelError(UsageError):
    """A head label that does not parse or is out of range for the model."""


class PromptError(InterpError):
    """Empty, unreadable or over-long prompts."""


class ResultsError(InterpError):
    """A HeadScores whose contents are not valid (wrong shape, infinite scores, non-string names)."""


class ResultsFileError(ResultsError):
    """A results file that is corrupt, incomplete or does not match what was asked for."""


class OutputPathError(InterpError):
    """An output file or folder that cannot be written (a directory where a file goes, no permission, …)."""


class MetricNotApplicableError(UsageError):
    """A metric that does not fit the loaded model (e.g. VHD on a text-only model)."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ' Did you mean "x"?' for the closest known name, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f' Did you mean "{close[0]}"?' if close else ""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UnknownNameError:
    """Build the standard 'unknown X' error listing the known names."""
    known = sorted(known)
    return UnknownNameError(f'Unknown {kind} "{name}".{did_you_mean(name, known)} Known {kind}s: {", ".join(known)}.')
