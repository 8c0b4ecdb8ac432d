"""End-to-end: the real `interp app` server on the default model, driven in headless Debian Chromium.

Starts the app as a user would (`python -m interp app --model default`), runs a scan, selects a head, opens its
detail, runs an ablation, and saves screenshots under test-artifacts/app/. Chromium comes from Debian's package
(`make e2e-deps` installs it when missing); playwright only drives it and never downloads a browser.
$INTERP_E2E_MODEL picks another model (e.g. tiny-llama) for a quick local run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "app"
MODEL = os.environ.get("INTERP_E2E_MODEL", "default")
FLAGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NAMES = {"default": "smollm2-135m-instruct"}
SHAPES = {"default": (30, 9)}  # layers, heads (tiny models: 3 x 4)
HEAD = {"default": "L1H5"}.get(MODEL, "L1H3")  # L1H5: the default model's top ablation-kl head on short prompts
SLOW = 900_000  # ms: a scan of the default model on a shared, loaded 2-core machine can take minutes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def ensure_chromium() -> None:
    """Install Debian's chromium through the project's own idempotent target when it is missing."""
    if not CHROMIUM.exists():
        subprocess.run(["make", "e2e-deps"], cwd=ROOT, check=True)
    assert CHROMIUM.exists(), "Chromium is missing: run `make e2e-deps` (installs Debian's chromium package)."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a socket listening on `port` (from /proc/net/tcp; state 0A = LISTEN)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if int(port_hex, 16) == port and fields[3] == "0A":
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]) if len(address) == 8 else address)
    return found


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    ensure_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(ARTIFACTS / "server.log", "w")  # noqa: SIM115 - closed below, after the server stops
    cmd = [sys.executable, "-m", "interp", "app", "--model", MODEL, "--port", str(port)]
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            assert server.poll() is None, (ARTIFACTS / "server.log").read_text()
            assert time.time() < deadline, "the app did not come up in 180 s"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # `interp app` and the streamlit process it started
        server.wait(timeout=30)
        log.close()


def test_app_binds_to_localhost_only(app_url: str) -> None:
    port = int(app_url.rsplit(":", 1)[1])
    assert listening_addresses(port) == {"127.0.0.1"}


def test_scan_select_head_ablate_in_chromium(app_url: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    profile = tempfile.mkdtemp(prefix="interp-e2e-chromium-")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=FLAGS,
                viewport={"width": 1500, "height": 1300},
            )
            page = browser.new_page()
            page.set_default_timeout(SLOW)
            expect.set_options(timeout=SLOW)
            run_user_story(page, app_url, expect)
            browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def shot(page, name: str) -> None:
    """Screenshot once the script run has finished (no "Running…" status) and plotly has drawn."""
    page.wait_for_timeout(500)
    page.wait_for_selector("[data-testid='stStatusWidget']", state="detached")
    page.wait_for_timeout(800)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def run_user_story(page, url: str, expect) -> None:
    started = time.time()
    page.goto(url)
    # First page: model facts and the one-pass quick look (attention entropy), with no user action.
    expect(page.get_by_text("Head explorer").first).to_be_visible()
    expect(page.locator("[data-testid='stMetricLabel']", has_text="Layers")).to_be_visible()
    expect(page.get_by_text("Quick look (one forward pass per prompt)")).to_be_visible()
    expect(page.get_by_role("combobox", name="Selected head")).to_be_visible()
    timings = {"first page useful (s)": time.time() - started}
    shot(page, "1-first-page")

    # A small scan (one prompt, raw template: ~8 tokens instead of the chat template's ~37, keeps it inside the CI
    # budget), with its progress bar.
    page.get_by_test_id("stSidebar").get_by_role("combobox", name="Template").click()
    page.get_by_role("option", name="raw", exact=True).click()
    limit = page.get_by_role("spinbutton", name="Use the first N of 8")
    limit.fill("1")
    limit.press("Enter")
    expect(page.get_by_text("1 prompt(s) in use.")).to_be_visible()
    started = time.time()
    page.get_by_role("button", name="Run scan").click()
    expect(page.get_by_text("Scanned ")).to_be_visible()
    timings["scan, 1 prompt (s)"] = time.time() - started
    expect(page.get_by_text(f"ablation-kl — {NAMES.get(MODEL, MODEL)}")).to_be_visible()  # the heatmap's title
    shot(page, "2-scan-result")

    # Select a head and look at it.
    # Select a head by clicking its heatmap cell (layer 0 is the top row), as a user would.
    n_layers, n_heads = SHAPES.get(MODEL, (3, 4))
    layer, head = (int(x) for x in HEAD[1:].split("H"))
    # The scan form is long (every option of the metric), so after the scan the heatmap's top rows can sit under
    # the page header or above the viewport: centre it first, since mouse clicks use viewport coordinates.
    plot_area = page.locator(".js-plotly-plot").first.locator("rect.nsewdrag").first
    plot_area.evaluate("e => e.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(300)
    cells = plot_area.bounding_box()  # the plot area, in viewport coordinates
    page.mouse.click(
        cells["x"] + cells["width"] * (head + 0.5) / n_heads, cells["y"] + cells["height"] * (layer + 0.5) / n_layers
    )
    expect(page.get_by_role("combobox", name="Selected head")).to_have_value(HEAD)
    page.get_by_role("tab", name="Head detail").click()
    expect(page.get_by_role("heading", name=f"Head {HEAD}")).to_be_visible()
    expect(page.get_by_text("Tokens it attends to most")).to_be_visible()
    expect(page.get_by_text("Entropy class")).to_be_visible()
    shot(page, "3-head-detail")

    # Ablate it: base and intervened generations side by side, and the next-token table (back on the chat
    # template, under which the instruct model answers).
    page.get_by_test_id("stSidebar").get_by_role("combobox", name="Template").click()
    page.get_by_role("option", name="auto", exact=True).click()
    page.get_by_role("tab", name="Intervene").click()
    expect(page.get_by_role("textbox", name="Heads (comma-separated)", exact=True)).to_have_value(HEAD)
    tokens = page.get_by_role("spinbutton", name="New tokens")
    tokens.fill("12")
    tokens.press("Enter")
    started = time.time()
    page.get_by_role("button", name="Run intervention").click()
    expect(page.get_by_text(f"zero on {HEAD}")).to_be_visible()
    expect(page.get_by_text("KL(base ‖ intervened), next token")).to_be_visible()
    timings["intervention, 12 tokens (s)"] = time.time() - started
    shot(page, "4-intervention")

    page.get_by_role("tab", name="Export").click()
    expect(page.get_by_text("interp scan ablation-kl").first).to_be_visible()
    shot(page, "5-export")
    load = os.getloadavg()[0]
    lines = [f"{k}: {v:.1f}" for k, v in timings.items()] + [f"model: {MODEL}", f"load average (1 min): {load:.1f}"]
    (ARTIFACTS / "timings.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
