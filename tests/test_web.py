"""The web app (needletrack serve-web), end to end through FastAPI's TestClient with a tiny random-weight model."""
from __future__ import annotations

import io
import json
import re
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fastapi  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
import httpx  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
import python_multipart  # noqa: F401 - a required dependency: a broken install fails here, it does not skip

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from needletrack.errors import NeedletrackError  # noqa: E402
from needletrack.io.samples import write_mp4  # noqa: E402
from needletrack.serve.web import STATIC_DIR, WebConfig, create_app  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def tiny_tracker():
    from needletrack.models import build_model
    from needletrack.track import Tracker

    return Tracker(build_model("stnan_tiny"))


@pytest.fixture(scope="module")
def mp4_bytes(tmp_path_factory) -> bytes:
    p = write_mp4(tmp_path_factory.mktemp("web") / "loop.mp4", n=6, h=48, w=64)
    return p.read_bytes()


class GatedTracker:
    """Wraps a tracker; each step waits for `gate` (so a test controls when frames get processed) and can fail."""

    def __init__(self, tracker, fail_at: int | None = None):
        self._t = tracker
        self.gate = threading.Event()
        self.fail_at = fail_at
        self.steps = 0

    def step(self, frame, **kw):
        if not self.gate.wait(30):
            raise RuntimeError("test gate never opened")
        self.steps += 1
        if self.fail_at is not None and self.steps > self.fail_at:
            raise NeedletrackError("frame 2 is 10×10 px but the stream started at 64×48 px")
        return self._t.step(frame, **kw)

    def __getattr__(self, name):
        return getattr(self._t, name)


def make_client(tracker, **cfg) -> TestClient:
    return TestClient(create_app(tracker, config=WebConfig(**cfg), model_label="stnan_tiny (test)"),
                      base_url="http://localhost")     # the server answers only to the names it serves


def upload(c, data: bytes, name: str = "loop.mp4"):
    return c.post("/api/jobs", files={"file": (name, data, "application/octet-stream")})


def wait_status(c, jid, statuses=("done", "failed", "cancelled"), timeout=60.0) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        j = c.get(f"/api/jobs/{jid}").json()
        if j["status"] in statuses:
            return j
        time.sleep(0.05)
    raise AssertionError(f"job {jid} still {j['status']} after {timeout} s")


def one_line(detail) -> str:
    assert isinstance(detail, str) and "\n" not in detail and detail.strip() == detail and detail
    assert "needletrack-web-" not in detail and "/tmp" not in detail, detail   # no server paths leak
    return detail


# ------------------------------------------------------------------------------------------------ end to end
def test_upload_prompt_track_download(tiny_tracker, mp4_bytes):
    import cv2

    from needletrack.io import open_cine
    from needletrack.track import CSV_HEADER

    with make_client(tiny_tracker) as c:
        app_root = c.app.state.manager.root
        r = upload(c, mp4_bytes, "my loop.mp4")
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["status"] == "ready" and job["name"] == "my loop.mp4"
        assert job["info"]["width"] == 64 and job["info"]["height"] == 48 and job["info"]["frames"] == 6
        assert job["info"]["fps"] == pytest.approx(25.0)
        jid = job["id"]

        f0 = c.get(f"/api/jobs/{jid}/frame0.png")
        assert f0.status_code == 200 and f0.headers["content-type"] == "image/png"
        img = cv2.imdecode(np.frombuffer(f0.content, np.uint8), cv2.IMREAD_UNCHANGED)
        assert img.shape == (48, 64)
        # the sample's bright diagonal line starts at the top-left: the first frame is the real first frame
        assert img[8, 0] > 150 and img.mean() < 120

        # downloads do not exist before the run
        assert c.get(f"/api/jobs/{jid}/files/needle.csv").status_code == 409

        r = c.post(f"/api/jobs/{jid}/track", json={"mode": "line", "line": [0, 8, 14, 15]})
        assert r.status_code == 202, r.text
        assert r.json()["status"] in ("queued", "running", "done")
        job = wait_status(c, jid)
        assert job["status"] == "done", job
        assert job["progress"] == {"done": 6, "total": 6, "fraction": 1.0}
        s = job["summary"]
        assert s["frames"] == 6 and s["prompt"] == "line" and s["input"] == "my loop.mp4"
        assert s["model"] == "stnan_tiny (test)"

        rows = c.get(f"/api/jobs/{jid}/rows").json()
        assert [r["frame"] for r in rows["rows"]] == list(range(6))
        assert rows["rows"][0]["visible"] and rows["rows"][0]["score"] == 1.0   # the prompt frame itself
        assert c.get(f"/api/jobs/{jid}/rows", params={"since": 4}).json()["rows"][0]["frame"] == 4

        csv = c.get(f"/api/jobs/{jid}/files/needle.csv")
        assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
        from urllib.parse import unquote

        cd = unquote(csv.headers["content-disposition"])
        assert cd.startswith("attachment;") and 'filename="needle.csv"' in cd     # `curl -OJ` -> needle.csv
        assert c.post(f"/api/jobs/{jid}/cancel").status_code == 409             # a finished job
        lines = csv.text.strip().splitlines()
        assert lines[0].split(",") == CSV_HEADER and len(lines) == 7
        # the table rows are the CSV's rows
        first = lines[1].split(",")
        assert float(first[4]) == pytest.approx(rows["rows"][0]["tip_x"], abs=0.01)

        summ = c.get(f"/api/jobs/{jid}/files/summary.json").json()
        assert summ["frames"] == 6 and summ["input"] == "my loop.mp4"
        assert "needletrack-web-" not in json.dumps(summ)

        z = c.get(f"/api/jobs/{jid}/files/masks.zip")
        assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
            names = sorted(zf.namelist())
            assert names == [f"masks/{i:05d}.png" for i in range(6)]
            m0 = cv2.imdecode(np.frombuffer(zf.read(names[0]), np.uint8), cv2.IMREAD_UNCHANGED)
        assert m0.shape == (48, 64) and set(np.unique(m0)) <= {0, 255} and (m0 == 255).any()

        v = c.get(f"/api/jobs/{jid}/files/overlay.mp4", params={"inline": 1})
        assert v.status_code == 200 and v.headers["content-type"] == "video/mp4"
        assert "attachment" not in v.headers.get("content-disposition", "")
        vid = Path(app_root) / "check.mp4"
        vid.write_bytes(v.content)
        with open_cine(vid) as cine:
            from needletrack.track.overlay import band_height

            assert cine.frames == 6 and (cine.width, cine.height) == (64, 48 + band_height(48, 64))

        # the job's folder is removed with the job, and the whole root at shutdown
        job_dir = app_root / jid
        assert job_dir.is_dir()
        assert c.delete(f"/api/jobs/{jid}").status_code == 204
        assert not job_dir.exists()
        assert c.get(f"/api/jobs/{jid}").status_code == 404
    assert not Path(app_root).exists()


def test_auto_mode_and_retrack(tiny_tracker, mp4_bytes):
    with make_client(tiny_tracker) as c:
        jid = upload(c, mp4_bytes).json()["id"]
        assert c.post(f"/api/jobs/{jid}/track", json={"mode": "auto"}).status_code == 202
        job = wait_status(c, jid)
        assert job["status"] == "done" and job["summary"]["prompt"] == "auto"
        # the same cine again with a line: a finished job can be re-run
        assert c.post(f"/api/jobs/{jid}/track", json={"mode": "line", "line": [0, 8, 14, 15]}).status_code == 202
        job = wait_status(c, jid)
        assert job["status"] == "done" and job["summary"]["prompt"] == "line"
        assert c.get("/api/info").json()["stats"]["runs_done"] == 2


def test_simulated_sample_scored_against_truth(tiny_tracker):
    with make_client(tiny_tracker, sample_size=64) as c:
        r = c.post("/api/jobs/sample", json={"frames": 4, "seed": 3})
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["kind"] == "sample" and job["info"]["frames"] == 4 and job["info"]["width"] == 64
        # frame 0 of the job is the simulator's frame 0 for the seed it reports
        from needletrack.sim import simulate_sequence

        seed = int(re.search(r"seed (\d+)", job["name"]).group(1))
        assert 3 <= seed < 23
        import cv2

        f0 = cv2.imdecode(np.frombuffer(c.get(f"/api/jobs/{job['id']}/frame0.png").content, np.uint8), 0)
        sim0 = next(iter(simulate_sequence(4, 64, "clinical", seed)))
        assert np.array_equal(f0, sim0[0]) and sim0[2]["visible"]
        x0, y0, x1, y1 = job["suggested_line"]
        assert all(0 <= v <= 63 for v in (x0, y0, x1, y1)) and np.hypot(x1 - x0, y1 - y0) > 3
        # the simulator's line is a valid prompt as it stands (clamped into the frame)
        assert c.post(f"/api/jobs/{job['id']}/track", json={"mode": "line", "line": job["suggested_line"]}) \
            .status_code == 202
        assert wait_status(c, job["id"])["status"] == "done"
        assert c.post(f"/api/jobs/{job['id']}/track", json={"mode": "truth"}).status_code == 202
        done = wait_status(c, job["id"])
        assert done["status"] == "done", done
        m = done["summary"]["metrics"]
        assert m["frames"] == 3 and 0.0 <= m["iou"] <= 1.0     # first frame unscored (docs/design.md §5)


@pytest.mark.parametrize("fmt", ["dicom", "dicom-no-extension", "mha"])
def test_other_formats_upload(tiny_tracker, tmp_path, fmt):
    from needletrack.io.samples import write_dicom, write_mha

    if fmt == "mha":
        p, name = write_mha(tmp_path / "scan.igs.mha", n=5, h=40, w=56), "scan.igs.mha"
        shape = (56, 40, 5)
    else:
        p = write_dicom(tmp_path / "loop.dcm", n=6, h=48, w=64)
        name = "loop.dcm" if fmt == "dicom" else "IM000001"
        shape = (64, 48, 6)
    with make_client(tiny_tracker) as c:
        r = upload(c, Path(p).read_bytes(), name)
        assert r.status_code == 201, r.text
        info = r.json()["info"]
        assert (info["width"], info["height"], info["frames"]) == shape
        assert info["format"] in ("dicom", "mha")


def test_zip_of_frames(tiny_tracker, tmp_path):
    import cv2

    from needletrack.io.samples import sample_frames

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, f in enumerate(sample_frames(12, 40, 56)):       # f2 < f10: natural order, not text order
            z.writestr(f"../cine/f{i}.png", cv2.imencode(".png", f)[1].tobytes())
        z.writestr("cine/readme.txt", "not a frame")
        z.writestr("__MACOSX/cine/._f1.png", b"junk")
    with make_client(tiny_tracker) as c:
        r = upload(c, buf.getvalue(), "frames.zip")
        assert r.status_code == 201, r.text
        job = r.json()
        assert (job["info"]["frames"], job["info"]["width"], job["info"]["height"]) == (12, 56, 40)
        root = c.app.state.manager.root
        assert sorted(p.name for p in (root / job["id"] / "frames").iterdir())[:2] == ["f0.png", "f1.png"]
        assert not (root / "cine").exists() and not (root.parent / "cine").exists()     # no zip-slip
        c.post(f"/api/jobs/{job['id']}/track", json={"mode": "auto"})
        assert wait_status(c, job["id"])["summary"]["frames"] == 12
        z = zipfile.ZipFile(io.BytesIO(c.get(f"/api/jobs/{job['id']}/files/masks.zip").content))
        assert "masks/f10.png" in z.namelist()                 # masks named after the input frames

        empty = io.BytesIO()
        with zipfile.ZipFile(empty, "w") as zz:
            zz.writestr("notes.txt", "hello")
        r = upload(c, empty.getvalue(), "notes.zip")
        assert r.status_code == 400 and "no frame images" in one_line(r.json()["detail"])
        r = upload(c, b"PK\x03\x04 broken", "broken.zip")
        assert r.status_code == 400 and "not a readable zip" in one_line(r.json()["detail"])


def test_zip_bomb_refused(tiny_tracker):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("f0.png", b"\0" * 3_000_000)               # 3 MB that compress to a few KB
    data = buf.getvalue()
    assert len(data) < 20_000
    with make_client(tiny_tracker, max_upload_mb=0.5) as c:     # unpacked budget: 4 × 0.5 MB
        r = upload(c, data, "bomb.zip")
        assert r.status_code == 400 and "unpacks to more than" in one_line(r.json()["detail"])
        assert list(c.app.state.manager.root.iterdir()) == []


def test_sample_lines_are_inside_the_frame(tiny_tracker):
    with make_client(tiny_tracker, sample_size=96, max_jobs=20) as c:
        for seed in range(8):
            job = c.post("/api/jobs/sample", json={"frames": 2, "seed": seed}).json()
            x0, y0, x1, y1 = job["suggested_line"]
            assert all(0 <= v <= 95 for v in (x0, y0, x1, y1)), (seed, job["suggested_line"])


# ------------------------------------------------------------------------------------------------ bad input
def test_text_file_named_mp4_is_refused(tiny_tracker):
    with make_client(tiny_tracker) as c:
        r = upload(c, b"this is not a video\n" * 20, "notes.mp4")
        assert r.status_code == 400
        d = one_line(r.json()["detail"])
        assert d.startswith("notes.mp4: ") and "video" in d
        assert c.app.state.manager.list() == []
        assert list(c.app.state.manager.root.iterdir()) == []       # nothing left behind


@pytest.mark.parametrize("name,data,needle", [
    ("notes.txt", b"hello", "unsupported file type '.txt'"),
    ("empty.mp4", b"", "empty"),
    ("scan.mhd", b"ObjectType = Image\n", "single-file .mha"),
    ("junk.dcm", b"\x00" * 300, "junk.dcm"),
])
def test_other_bad_uploads(tiny_tracker, name, data, needle):
    with make_client(tiny_tracker) as c:
        r = upload(c, data, name)
        assert r.status_code == 400
        assert needle in one_line(r.json()["detail"])


def test_upload_too_large(tiny_tracker, mp4_bytes):
    limit_mb = 0.02                      # 20 KB
    big = b"\x00" * 200_000
    with make_client(tiny_tracker, max_upload_mb=limit_mb) as c:
        r = upload(c, big, "big.mp4")
        assert r.status_code == 413
        assert "limit is 0.02 MB" in one_line(r.json()["detail"])

        # a chunked body without Content-Length is cut off as it streams in
        boundary = "xyzBOUNDARY"

        def body():
            yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n"
                   "Content-Type: video/mp4\r\n\r\n").encode()
            for _ in range(50):
                yield b"\x00" * 10_000
            yield f"\r\n--{boundary}--\r\n".encode()

        r = c.post("/api/jobs", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 413
        one_line(r.json()["detail"])
        assert c.app.state.manager.list() == []
        # a small file still goes through under the same limit
        assert upload(c, mp4_bytes).status_code == 201


def test_frame_size_limit(tiny_tracker, mp4_bytes):
    with make_client(tiny_tracker, max_side_px=32) as c:
        r = upload(c, mp4_bytes)
        assert r.status_code == 400 and "64×48 px; the limit is 32 px" in one_line(r.json()["detail"])


def test_bad_prompts_and_unknowns(tiny_tracker, mp4_bytes):
    with make_client(tiny_tracker) as c:
        jid = upload(c, mp4_bytes).json()["id"]
        cases = [
            ({"mode": "line", "line": [0, 0, 100, 10]}, 400, "outside the 64×48"),
            ({"mode": "line", "line": [5, 5, 6, 6]}, 400, "shorter than 3 px"),
            ({"mode": "line", "line": [1, 2, 3]}, 400, "four finite numbers"),
            ({"mode": "line"}, 400, "four finite numbers"),
            ({"mode": "truth"}, 400, "only for the simulated sample"),
            ({"mode": "magic"}, 400, "unknown prompt mode"),
            ({"mode": "line", "line": "0,0,9,9"}, 422, "invalid request"),
        ]
        for body, code, needle in cases:
            r = c.post(f"/api/jobs/{jid}/track", json=body)
            assert r.status_code == code, (body, r.text)
            assert needle in one_line(r.json()["detail"]), (body, r.text)
        assert c.get(f"/api/jobs/{jid}").json()["status"] == "ready"
        assert c.get("/api/jobs/0123456789abcdef").status_code == 404
        assert c.post("/api/jobs/nope/track", json={"mode": "auto"}).status_code == 404
        assert c.get(f"/api/jobs/{jid}/files/../../etc/passwd").status_code == 404
        r = c.get(f"/api/jobs/{jid}/files/secret.txt")
        assert r.status_code == 404 and "available" in one_line(r.json()["detail"])


# ------------------------------------------------------------------------------------------------ jobs
def test_cancel_running_job_cleans_partial_outputs(tiny_tracker, mp4_bytes):
    gated = GatedTracker(tiny_tracker)
    with make_client(gated) as c:
        jid = upload(c, mp4_bytes).json()["id"]
        assert c.post(f"/api/jobs/{jid}/track", json={"mode": "auto"}).status_code == 202
        wait_status(c, jid, ("running",))
        r = c.post(f"/api/jobs/{jid}/track", json={"mode": "auto"})
        assert r.status_code == 409 and "already running" in one_line(r.json()["detail"])
        assert c.post(f"/api/jobs/{jid}/cancel").status_code == 200
        gated.gate.set()
        job = wait_status(c, jid)
        assert job["status"] == "cancelled" and job["progress"]["done"] <= 1
        assert not (c.app.state.manager.root / jid / "out").exists()
        assert c.get(f"/api/jobs/{jid}/files/overlay.mp4").status_code == 409
        r = c.post(f"/api/jobs/{jid}/cancel")                   # nothing left to cancel
        assert r.status_code == 409 and "only a queued or running job" in one_line(r.json()["detail"])


def test_failed_run_reports_one_line(tiny_tracker, mp4_bytes):
    gated = GatedTracker(tiny_tracker, fail_at=2)
    gated.gate.set()
    with make_client(gated) as c:
        jid = upload(c, mp4_bytes).json()["id"]
        c.post(f"/api/jobs/{jid}/track", json={"mode": "line", "line": [0, 8, 14, 15]})
        job = wait_status(c, jid)
        assert job["status"] == "failed"
        assert "stream started at 64×48" in one_line(job["error"])
        assert not (c.app.state.manager.root / jid / "out").exists()


def test_job_limit_evicts_idle_and_refuses_when_busy(tiny_tracker, mp4_bytes):
    gated = GatedTracker(tiny_tracker)
    with make_client(gated, max_jobs=2, evict_idle_s=0) as c:     # any idle job may make room
        root = c.app.state.manager.root
        a = upload(c, mp4_bytes).json()["id"]
        b = upload(c, mp4_bytes).json()["id"]
        c.get(f"/api/jobs/{b}")                                  # b is the most recently used
        r = upload(c, mp4_bytes)                                 # full: the idle, least recently used job goes
        assert r.status_code == 201
        cc = r.json()["id"]
        assert c.get(f"/api/jobs/{a}").status_code == 404 and not (root / a).exists()
        # both remaining jobs busy (one running, one queued): a new upload is refused, nothing is evicted
        c.post(f"/api/jobs/{b}/track", json={"mode": "auto"})
        c.post(f"/api/jobs/{cc}/track", json={"mode": "auto"})
        wait_status(c, b, ("running",))
        assert c.get(f"/api/jobs/{cc}").json()["status"] == "queued"
        r = upload(c, mp4_bytes)
        assert r.status_code == 429 and "busy" in one_line(r.json()["detail"])
        assert c.post("/api/jobs/sample", json={"frames": 3}).status_code == 429
        # deleting a queued job frees its slot and its folder at once
        assert c.delete(f"/api/jobs/{cc}").status_code == 204 and not (root / cc).exists()
        gated.gate.set()
        assert wait_status(c, b)["status"] == "done"
        assert len(list(root.iterdir())) == 1


def test_idle_jobs_expire(tiny_tracker, mp4_bytes):
    with make_client(tiny_tracker, job_ttl_s=0.2) as c:
        a = upload(c, mp4_bytes).json()["id"]
        time.sleep(0.3)
        upload(c, mp4_bytes)                   # any new job sweeps expired ones
        assert c.get(f"/api/jobs/{a}").status_code == 404
        assert c.get("/api/info").json()["stats"]["jobs_expired"] == 1


# ------------------------------------------------------------------------------------------------ page & API docs
def test_page_is_self_contained(tiny_tracker):
    with make_client(tiny_tracker) as c:
        r = c.get("/")
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assert "default-src 'self'" in r.headers["content-security-policy"]
        srcs = re.findall(r'(?:src|href)="([^"]+)"', r.text)
        assert "/static/app.js" in srcs and "/static/style.css" in srcs
        for s in srcs:                        # every referenced file is served by us
            if s.startswith("/static/"):
                assert c.get(s).status_code == 200, s
        api = c.get("/api")                   # the offline API page renders /openapi.json
        assert api.status_code == 200 and "/static/api.js" in api.text
        info = c.get("/api/info").json()
        assert info["model"]["label"] == "stnan_tiny (test)" and info["model"]["input_size"] == [64, 64]
    # nothing on the page may come from the internet
    for p in STATIC_DIR.iterdir():
        text = p.read_text()
        assert not re.search(r"(?:src|href|url|fetch)\s*[=(]\s*[\"'`]?(?:https?:)?//", text), p.name
        assert "cdn" not in text.lower(), p.name
        if p.suffix == ".html":
            assert "style=" not in text and "<script>" not in text, p.name   # CSP: no inline styles/scripts


def test_openapi_documents_the_api(tiny_tracker):
    with make_client(tiny_tracker) as c:
        spec = c.get("/openapi.json").json()
    paths = spec["paths"]
    for p, method in [("/api/jobs", "post"), ("/api/jobs/sample", "post"), ("/api/jobs/{job_id}", "get"),
                      ("/api/jobs/{job_id}/track", "post"), ("/api/jobs/{job_id}/rows", "get"),
                      ("/api/jobs/{job_id}/files/{name}", "get"), ("/api/jobs/{job_id}/cancel", "post"),
                      ("/api/jobs/{job_id}", "delete"), ("/api/info", "get")]:
        assert method in paths[p], (p, method)
        assert paths[p][method].get("summary"), (p, method)
    assert "TrackRequest" in spec["components"]["schemas"]


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_errors_are_one_line(capsys, tmp_path):
    import socket

    from needletrack.cli import main

    assert main(["serve-web", "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err
    assert main(["serve-web", "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb must be positive" in capsys.readouterr().err
    with socket.socket() as s:                    # a port in use
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["serve-web", "--port", str(port)]) == 2
        err = capsys.readouterr().err.strip()
        assert f"cannot listen on 127.0.0.1:{port}" in err and "\n" not in err
    missing = tmp_path / "nope.safetensors"
    assert main(["serve-web", "--port", "0", "--model", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope.safetensors" in err and "\n" not in err
