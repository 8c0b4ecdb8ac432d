"""`python -m interp ...` is the same as the `interp` command."""

from interp.cli import app

app()
