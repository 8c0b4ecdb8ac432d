"""Start the head explorer from Python on a model object you already have (a notebook, a script).

    import interp.app
    server = interp.app.serve(bridge)                       # a TransformerBridge you booted yourself
    server = interp.app.serve((hf_model, tokenizer), block=False)   # returns at once; server.stop() ends it
    server = interp.app.serve("org/name", device="cuda")    # or anything load_model takes

`interp app` (the CLI) runs Streamlit in a new process, which cannot see objects in this one. `serve` runs the
same page (apps/head_explorer.py) in *this* process instead, on a background thread, so the page works on the
very object passed in (wrapped once by `as_loaded_model`; no second bridge, the object's hooks untouched). It
binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp.app import support as sup
from interp.core.errors import InterpError
from interp.model.adopt import as_loaded_model
from interp.model.loading import load_model


def app_script() -> Path:
    """The Streamlit page: apps/ in a source checkout, or the copy packaged inside the wheel."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "apps" / "head_explorer.py", package / "_apps" / "head_explorer.py"):
        if candidate.is_file():
            return candidate
    raise InterpError("Cannot find apps/head_explorer.py next to the package.")


@dataclass
class AppServer:
    """A head explorer running in this process: its address, the model it opened with, and stop()."""

    url: str
    model_key: str
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _server: Any = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server and wait for its thread (the launched model stays registered for a later serve)."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._server.stop)
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


def serve(
    model: Any = "default",
    tokenizer: Any = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8501,
    block: bool = True,
    device: str | None = None,
    dtype: str | None = None,
    timeout: float = 60.0,
) -> AppServer:
    """Run the head explorer in this process on `model` and return when it answers (block=False) or when
    interrupted (block=True, Ctrl+C).

    model: a LoadedModel, a TransformerBridge, an HF model with `tokenizer=` or (model, tokenizer), or a name /
        path / hub id for load_model (with device / dtype). It is preselected in the sidebar; the other models
        stay selectable.
    """
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        raise InterpError('The app needs streamlit. Install it with:\n    pip install "interp[app]"')
    if isinstance(model, (str, Path)):
        loaded = load_model(model, device, dtype)
    else:
        if device is not None or dtype is not None:
            raise InterpError("device / dtype are for loading by name; move a model object before passing it.")
        loaded = as_loaded_model(model, tokenizer)
    key = sup.launch_model(loaded)
    server, loop, thread = _start_streamlit(str(app_script()), host, port, timeout)
    handle = AppServer(f"http://{host}:{port}", key, loop, server, thread)
    print(f"Head explorer on {handle.url} (model: {loaded.name}).", flush=True)
    if block:
        try:
            while thread.is_alive():
                thread.join(0.5)
        except KeyboardInterrupt:
            handle.stop()
    return handle


def _start_streamlit(
    script: str, host: str, port: int, timeout: float
) -> tuple[Any, asyncio.AbstractEventLoop, threading.Thread]:
    """Streamlit's server on its own event loop in a daemon thread (as `streamlit run` does on the main one,
    minus its signal handlers and sys.argv changes, which belong to the host process)."""
    from streamlit.web import bootstrap
    from streamlit.web.server import Server

    bootstrap.load_config_options(
        {
            "server_address": host,
            "server_port": port,
            "server_headless": True,
            "server_fileWatcherType": "none",  # no reloads of the page while a model object lives here
            "browser_gatherUsageStats": False,
        }
    )
    loop = asyncio.new_event_loop()
    server = Server(script, is_hello=False)
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as exc:  # e.g. the port is taken: reported to the caller below
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_until_complete(server.stopped)

    thread = threading.Thread(target=run, name="interp-app", daemon=True)
    thread.start()
    started.wait(timeout)
    if failure:
        raise InterpError(f"The head explorer could not start on {host}:{port}: {failure[0]}") from failure[0]
    _wait_healthy(f"http://{host}:{port}/_stcore/health", timeout)
    return server, loop, thread


def _wait_healthy(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # a local http URL built above
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise InterpError(f"The head explorer did not answer at {url} within {timeout:.0f} s.")
        time.sleep(0.2)
