"""The page in a real headless Chromium: upload, draw the needle on the canvas, track, see the results.

Drives Chromium through the DevTools protocol over a pipe (``--remote-debugging-pipe``), so it needs no
Python browser package; it skips when no chromium binary is installed (Debian: ``apt-get install chromium``).
Set NEEDLETRACK_WEB_SCREENSHOT=path.png to save a screenshot of the finished page.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import warnings

import pytest

import fastapi  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
import uvicorn  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
import python_multipart  # noqa: F401 - a required dependency: a broken install fails here, it does not skip

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if shutil.which(n)), None)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio",
         "--hide-scrollbars", "--window-size=1280,1800", "--remote-debugging-pipe"]


class Browser:
    """A minimal DevTools-protocol client over chromium's fd 3 (commands in) / fd 4 (events out) pipe."""

    def __init__(self, profile_dir):
        cmd_r, self._cmd_w = os.pipe()
        self._evt_r, evt_w = os.pipe()

        def child_fds():
            a, b = os.dup(cmd_r), os.dup(evt_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(3, 4),
                                     preexec_fn=child_fds)
        os.close(cmd_r)
        os.close(evt_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        self.session = None

    def _read_message(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no answer from chromium")
            r, _, _ = select.select([self._evt_r], [], [], left)
            if r:
                chunk = os.read(self._evt_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: bool = True, timeout: float = 30.0) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "DOM"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": url})

    def js(self, expr: str):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    def wait_for(self, expr: str, timeout: float = 60.0):
        t0 = time.time()
        last = None
        while time.time() - t0 < timeout:
            try:
                v = self.js(expr)
            except RuntimeError as e:      # e.g. the page is still loading
                v, last = None, e
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expr} (last error: {last}; page errors: {self.errors()})")

    def mouse(self, kind: str, x: float, y: float, buttons: int = 1) -> None:
        self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "buttons": buttons,
                                               "clickCount": 1})

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(p["exceptionDetails"].get("text", "exception"))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(p["entry"].get("text", ""))
            elif m == "Runtime.consoleAPICalled" and p.get("type") == "error":
                out.append(" ".join(str(a.get("value")) for a in p.get("args", [])))
        return out

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False, timeout=5)
        except Exception:  # noqa: BLE001
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._evt_r)


@pytest.fixture
def server(tmp_path):
    import uvicorn

    from needletrack.models import build_model
    from needletrack.serve.web import WebConfig, create_app
    from needletrack.track import Tracker

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = create_app(Tracker(build_model("stnan_tiny")), config=WebConfig(work_dir=str(tmp_path / "work")),
                         model_label="stnan_tiny (test)")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    th = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    t0 = time.time()
    while not srv.started and time.time() - t0 < 20:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/", app
    srv.should_exit = True
    th.join(10)
    sock.close()


def test_page_upload_draw_track(server, tmp_path):
    from needletrack.io.samples import write_mp4

    url, app = server
    mp4 = write_mp4(tmp_path / "loop.mp4", n=6, h=48, w=64)
    b = Browser(tmp_path / "profile")
    try:
        b.open(url)
        b.wait_for("document.getElementById('model').textContent.includes('stnan_tiny')")
        # upload through the real file input
        doc = b.send("DOM.getDocument")["root"]["nodeId"]
        node = b.send("DOM.querySelector", {"nodeId": doc, "selector": "#file"})["nodeId"]
        b.send("DOM.setFileInputFiles", {"nodeId": node, "files": [str(mp4)]})
        b.wait_for("!document.getElementById('step-prompt').hidden && !!document.getElementById('frame').width")
        assert b.js("document.getElementById('frame').width") == 64
        assert "loop.mp4" in b.js("document.getElementById('cine-info').textContent")
        assert b.js("document.getElementById('track').disabled") is True     # no line yet

        # drag along the needle on the canvas: image (0.5, 8) -> (14, 15)
        b.js("document.getElementById('frame').scrollIntoView()")
        rect = b.js("(() => { const r = document.getElementById('frame').getBoundingClientRect();"
                    " return [r.left, r.top, r.width, r.height]; })()")
        sx, sy = rect[2] / 64, rect[3] / 48

        def at(x, y):
            return rect[0] + x * sx, rect[1] + y * sy

        b.mouse("mousePressed", *at(0.5, 8))
        b.mouse("mouseMoved", *at(7, 11.5))
        b.mouse("mouseMoved", *at(14, 15))
        b.mouse("mouseReleased", *at(14, 15), buttons=0)
        vals = b.js("['x0','y0','x1','y1'].map(id => parseFloat(document.getElementById(id).value))")
        assert vals == pytest.approx([0.5, 8, 14, 15], abs=0.6)
        assert b.js("document.getElementById('track').disabled") is False
        # the line is drawn on the canvas: a yellow pixel on it
        px = b.js("Array.from(document.getElementById('frame').getContext('2d').getImageData(7, 11, 1, 2).data)")
        assert max(px[0], px[4]) > 200 and max(px[1], px[5]) > 180 and min(px[2], px[6]) < 120, px

        b.js("document.getElementById('track').click()")
        b.wait_for("!document.getElementById('step-results').hidden", timeout=90)
        assert b.js("document.querySelectorAll('#table tbody tr').length") == 6
        assert b.js("document.getElementById('figures').textContent").count("6") >= 2
        links = b.js("Array.from(document.querySelectorAll('#downloads a')).map(a => a.getAttribute('href'))")
        assert sorted(h.rsplit("/", 1)[1] for h in links) == ["masks.zip", "needle.csv", "overlay.mp4",
                                                              "summary.json"]
        assert "overlay.mp4" in b.js("document.getElementById('video').src")
        # the overlay video decodes in the browser
        b.wait_for("document.getElementById('video').readyState >= 2", timeout=20)
        assert b.js("document.getElementById('video').videoWidth") == 64
        # the plot got drawn (not blank)
        assert b.js("(() => { const c = document.getElementById('plot'); const d = c.getContext('2d')"
                    ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
                    " for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; })()") > 2000
        shot = os.environ.get("NEEDLETRACK_WEB_SCREENSHOT")
        if shot:
            data = b.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
            with open(shot, "wb") as f:
                f.write(base64.b64decode(data))
        # a reload restores the job from the address
        b.send("Page.reload")
        b.wait_for("document.querySelectorAll('#table tbody tr').length === 6", timeout=30)
        assert b.errors() == []              # no JS errors, nothing blocked by the content security policy
        # a bad file gets the server's one-line message in the page
        bad = tmp_path / "notes.mp4"
        bad.write_text("not a video\n")
        doc = b.send("DOM.getDocument")["root"]["nodeId"]
        node = b.send("DOM.querySelector", {"nodeId": doc, "selector": "#file"})["nodeId"]
        b.send("DOM.setFileInputFiles", {"nodeId": node, "files": [str(bad)]})
        msg = b.wait_for("document.querySelector('#load-msg.error') && "
                         "document.querySelector('#load-msg.error').textContent")
        assert msg.startswith("notes.mp4: ")
        # the offline API page lists the endpoints from /openapi.json
        b.events.clear()                     # (the refused upload above logged its HTTP 400)
        b.send("Page.navigate", {"url": url + "api"})
        n = b.wait_for("document.querySelectorAll('table.endpoints tbody tr').length")
        assert n >= 9
        assert "/api/jobs/{job_id}/track" in b.js("document.querySelector('table.endpoints').textContent")
        assert b.errors() == []
    finally:
        b.close()
