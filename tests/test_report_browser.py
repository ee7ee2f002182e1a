"""The report in a real headless Chromium: opened from disk and from `python -m http.server`.

Checks that a screenshot is written and not blank, that the page raises no JavaScript or
console errors, that its plots and <video> elements are in the DOM, and (through the DevTools
protocol) that the browser actually decodes the first video (readyState >= HAVE_METADATA).
Install the browser with: apt-get install -y chromium chromium-driver
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from test_report import make_runs
from vlastack.evaluation.report import build_report

CHROME = next((p for n in ("chromium", "chromium-browser") if (p := shutil.which(n))), None)
pytestmark = pytest.mark.skipif(
    CHROME is None, reason="chromium not installed (apt-get install -y chromium chromium-driver)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--mute-audio",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_server(root: Path):
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class DevTools:
    """Minimal Chrome DevTools protocol client over the page's websocket."""

    def __init__(self, user_data_dir: Path) -> None:
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [
                CHROME,
                *FLAGS,
                f"--user-data-dir={user_data_dir}",
                "--remote-debugging-port=0",
                "--window-size=1280,1600",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = user_data_dir / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        for _ in range(100):
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
            pages = [t for t in targets if t["type"] == "page"]
            if pages:
                break
            time.sleep(0.1)
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.next_id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, timeout_s: float = 60.0, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def eval(self, js: str):
        return self.call("Runtime.evaluate", expression=js, returnByValue=True)["result"].get(
            "value"
        )

    def load(self, url: str, timeout_s: float = 60.0) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout_s
        while self.eval("document.readyState") != "complete":
            assert time.monotonic() < deadline, f"{url} did not finish loading"
            time.sleep(0.1)

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(json.dumps(p["exceptionDetails"])[:300])
            elif m == "Runtime.consoleAPICalled" and p.get("type") == "error":
                out.append(json.dumps(p.get("args"))[:300])
            elif (
                m == "Log.entryAdded"
                and p["entry"]["level"] == "error"
                and "favicon.ico" not in p["entry"].get("url", "")  # http.server has none
            ):
                out.append(p["entry"]["text"][:300])
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def check_page(dt: DevTools, url: str) -> None:
    dt.load(url)
    assert dt.eval("document.querySelectorAll('.plot svg').length") >= 2
    assert dt.eval("document.querySelectorAll('video').length") >= 3
    deadline = time.monotonic() + 30
    state = None
    while time.monotonic() < deadline:
        state = dt.eval(
            "(() => { const v = document.querySelector('video'); return {ready: v.readyState,"
            " error: v.error && v.error.code, w: v.videoWidth}; })()"
        )
        if state["ready"] >= 1 or state["error"]:
            break
        time.sleep(0.2)
    assert state and state["error"] is None, f"the browser could not decode the video: {state}"
    assert state["ready"] >= 1 and state["w"] > 0, f"video never loaded: {state}"
    assert dt.errors() == []


def assert_not_blank(png: Path) -> None:
    from PIL import Image

    assert png.exists() and png.stat().st_size > 1000
    img = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    assert img.std() > 10 and (img < 200).mean() > 0.02  # text, bars and frames, not a white page


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    runs = make_runs(root)
    embedded = build_report(runs, root / "embedded.html", videos="embed")
    linked = build_report(runs, root / "reports" / "linked.html", videos="link")
    return root, embedded, linked


def test_screenshot_from_disk(site, tmp_path):
    _root, embedded, _linked = site
    png = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROME,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={png}",
            "--window-size=1280,1800",
            embedded.as_uri(),
        ],
        timeout=120,
        capture_output=True,
        check=False,
    )
    assert_not_blank(png)


def test_page_runs_in_chromium_from_disk_and_http(site, tmp_path):
    root, embedded, linked = site
    dt = DevTools(tmp_path / "profile")
    try:
        check_page(dt, embedded.as_uri())
        check_page(dt, linked.as_uri())  # relative video links from disk
        with http_server(root) as base:
            check_page(dt, f"{base}/reports/linked.html")
            check_page(dt, f"{base}/embedded.html")
            shot = dt.call("Page.captureScreenshot", format="png")["data"]
        png = tmp_path / "http.png"
        import base64

        png.write_bytes(base64.b64decode(shot))
        assert_not_blank(png)
    finally:
        dt.close()
