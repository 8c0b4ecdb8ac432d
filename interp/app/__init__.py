"""The Streamlit face: support.py holds the app's logic (testable without Streamlit); the pages are apps/.

`interp.app.serve(model)` starts the head explorer in this process on a model object (launch.py); the CLI's
`interp app` starts it in a new process by name.
"""

from typing import Any


def __getattr__(name: str) -> Any:  # serve / AppServer on first use: `import interp.app` stays light
    if name in ("serve", "AppServer"):
        from interp.app import launch

        return getattr(launch, name)
    raise AttributeError(f"module 'interp.app' has no attribute {name!r}")
