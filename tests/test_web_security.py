"""serve-web hardening (issue 14): no file reads through uploads (S1), Host check against DNS rebinding (S2), no
job listing and 128-bit ids (S3), no cross-site state changes (S4), --max-jobs under concurrency (S5)."""
from __future__ import annotations

import base64
import json
import re
import threading
import time
import warnings
from pathlib import Path

import pytest

import fastapi  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
import httpx  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
import python_multipart  # noqa: F401 - a required dependency: a broken install fails here, it does not skip

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from needletrack.io.samples import write_mha, write_mp4  # noqa: E402
from needletrack.serve.web import STATIC_DIR, WebConfig, create_app  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _no_tracker():
    raise AssertionError("these tests never track")


def client(**cfg) -> TestClient:
    app = create_app(tracker_factory=_no_tracker, config=WebConfig(**cfg), model_label="none")
    return TestClient(app, base_url="http://localhost")


@pytest.fixture(scope="module")
def mp4(tmp_path_factory) -> bytes:
    return write_mp4(tmp_path_factory.mktemp("sec") / "loop.mp4", n=3, h=32, w=48).read_bytes()


def upload(c, data: bytes, name: str = "loop.mp4", headers=None):
    return c.post("/api/jobs", files={"file": (name, data, "application/octet-stream")}, headers=headers or {})


def detail(r) -> str:
    d = r.json()["detail"]
    assert isinstance(d, str) and "\n" not in d and "Traceback" not in d, d
    return d


# ------------------------------------------------------------------------------------------------ S1 uploads
def test_mha_upload_naming_another_file_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 4)
    with client() as c:
        root = c.app.state.manager.root
        for ref in (str(secret), "../../secret.txt", "frame0.png", "input.mha"):
            hdr = (f"ObjectType = Image\nNDims = 2\nDimSize = 16 8\nElementType = MET_UCHAR\n"
                   f"ElementDataFile = {ref}\n").encode()
            r = upload(c, hdr, "scan.mha")
            assert r.status_code == 400, (ref, r.text)
            d = detail(r)
            assert d.startswith("scan.mha: ") and "pixel file" in d, d
            assert str(root) not in d
        assert c.app.state.manager.list() == [] and list(root.iterdir()) == []


def test_single_file_mha_upload_still_works(tmp_path):
    data = write_mha(tmp_path / "seq.igs.mha", n=3, h=24, w=32).read_bytes()
    with client() as c:
        r = upload(c, data, "seq.igs.mha")
        assert r.status_code == 201, r.text
        job = r.json()
        assert (job["info"]["width"], job["info"]["height"], job["info"]["frames"]) == (32, 24, 3)
        png = c.get(job["links"]["frame0"])
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_video_playlist_upload_is_refused(tmp_path):
    other = write_mp4(tmp_path / "private.mp4", n=3, h=32, w=48)
    with client() as c:
        for text in (f"ffconcat version 1.0\nfile {other}\n",
                     f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{other}\n#EXT-X-ENDLIST\n"):
            r = upload(c, text.encode(), "clip.mp4")
            assert r.status_code == 400 and detail(r).startswith("clip.mp4: ")
        assert c.app.state.manager.list() == []


# ------------------------------------------------------------------------------------------------ S2 Host header
@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "localhost.attacker.example",
                                  "127.0.0.1.nip.io:8000", "[::2]:8000", "localhost:notaport", "local host",
                                  "localhost@attacker.example"])
def test_foreign_host_is_refused(mp4, host):
    with client() as c:
        for r in (c.get("/api/info", headers={"host": host}), c.get("/", headers={"host": host}),
                  upload(c, mp4, headers={"host": host})):
            assert r.status_code == 400, (host, r.status_code)
            assert "is not served here" in detail(r) and "--allowed-host" in detail(r)
        assert c.app.state.manager.list() == []          # the refused upload created nothing


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "LocalHost:8000", "127.0.0.1", "127.0.0.1:1234",
                                  "[::1]:8000", "[::1]"])
def test_loopback_names_are_served(host):
    with client() as c:
        r = c.get("/api/health", headers={"host": host})
        assert r.status_code == 200 and r.json() == {"ok": True}


def test_allowed_hosts_are_exactly_the_configured_ones():
    with client(allowed_hosts=("needle.lan", "10.0.0.5")) as c:
        assert c.get("/api/health", headers={"host": "needle.lan:8000"}).status_code == 200
        assert c.get("/api/health", headers={"host": "10.0.0.5"}).status_code == 200
        assert c.get("/api/health", headers={"host": "localhost"}).status_code == 400
        assert c.get("/api/health", headers={"host": "evil.lan"}).status_code == 400


def test_allowed_hosts_for_the_bind_address():
    from needletrack.commands.serve_web import allowed_hosts_for
    from needletrack.errors import NeedletrackError

    assert allowed_hosts_for("127.0.0.1") == ("localhost", "127.0.0.1", "::1")
    assert allowed_hosts_for("::1", ["Needle.Lan"]) == ("localhost", "127.0.0.1", "::1", "needle.lan")
    assert allowed_hosts_for("localhost") == ("localhost", "127.0.0.1", "::1")
    assert allowed_hosts_for("192.168.1.5") == ("192.168.1.5",)
    assert allowed_hosts_for("0.0.0.0", ["scanner-pc"]) == ("localhost", "127.0.0.1", "::1", "scanner-pc")
    assert allowed_hosts_for("::", ["[fe80::1]"])[-1] == "fe80::1"
    for host, extra in (("0.0.0.0", []), ("::", []), ("0.0.0.0", ["a:80"]), ("127.0.0.1", ["a/b"])):
        with pytest.raises(NeedletrackError):
            allowed_hosts_for(host, extra)


def test_cli_wildcard_bind_needs_allowed_host(capsys, monkeypatch):
    from needletrack.cli import main
    from needletrack.commands import serve_web

    def no_model(*a, **k):
        raise AssertionError("must fail before loading a model")

    monkeypatch.setattr(serve_web, "load_tracker", no_model)
    for host in ("0.0.0.0", "::"):
        assert main(["serve-web", "--host", host, "--port", "0"]) == 2
        err = capsys.readouterr().err.strip()
        assert "--allowed-host" in err and "\n" not in err and "Traceback" not in err
    assert main(["serve-web", "--port", "0", "--allowed-host", "pc:8000"]) == 2
    assert "without a port" in capsys.readouterr().err


def test_cli_passes_allowed_hosts_to_the_app(monkeypatch, capsys):
    import uvicorn

    from needletrack.cli import main
    from needletrack.commands import serve_web

    seen = {}

    def fake_run(self, sockets=None):
        seen["hosts"] = self.config.app.state.manager.config.allowed_hosts
        seen["bound"] = sockets[0].getsockname()[0]
        self.config.app.state.manager.close()

    monkeypatch.setattr(serve_web, "load_tracker", lambda model, device="cpu": (object(), "stub", None))
    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    assert main(["serve-web", "--host", "0.0.0.0", "--port", "0", "--allowed-host", "scanner-pc",
                 "--allowed-host", "10.1.2.3", "-q"]) == 0
    assert seen == {"hosts": ("localhost", "127.0.0.1", "::1", "scanner-pc", "10.1.2.3"), "bound": "0.0.0.0"}
    assert "scanner-pc" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ S3 ids, no listing
def test_no_job_listing_and_long_ids(mp4):
    with client() as c:
        ids = [upload(c, mp4).json()["id"] for _ in range(2)]
        r = c.get("/api/jobs")
        assert r.status_code in (404, 405)
        assert not any(i in r.text for i in ids)
        assert "get" not in c.get("/openapi.json").json()["paths"]["/api/jobs"]
        info = c.get("/api/info").text
        assert not any(i in info for i in ids)
    for i in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", i), i
        assert len(base64.urlsafe_b64decode(i + "=" * (-len(i) % 4))) >= 16      # >= 128 random bits
    assert ids[0] != ids[1]


def test_page_does_not_list_jobs_and_accepts_the_new_ids():
    js = (STATIC_DIR / "app.js").read_text()
    for m in re.finditer(r"""["'`]/api/jobs["'`]""", js):        # the bare collection path: only uploads
        line = js[js.rfind("\n", 0, m.start()) + 1: js.find("\n", m.end())]
        assert "POST" in line, line
    # the address-bar regex that restores a job after a reload must match the ids the server hands out
    rx = re.search(r"/job=\((\[[^\]]+\]\{[^}]+\})\)/", js)
    assert rx, "app.js: job id pattern not found"
    sample_id = "Ab3_-xYz0123456789abcd"
    assert re.fullmatch(rx.group(1), sample_id)


# ------------------------------------------------------------------------------------------------ S4 cross-site
@pytest.mark.parametrize("headers", [
    {"origin": "http://evil.example"},
    {"origin": "null"},
    {"origin": "http://localhost:9999"},            # another port on this computer is another origin
    {"origin": "https://localhost"},
    {"sec-fetch-site": "cross-site"},
    {"sec-fetch-site": "same-site"},
    {"origin": "http://localhost", "sec-fetch-site": "cross-site"},
])
def test_cross_site_state_changes_are_refused(mp4, headers):
    with client() as c:
        r = upload(c, mp4, headers=headers)
        assert r.status_code == 403 and "refused" in detail(r)
        r = c.post("/api/jobs/sample", json={"frames": 2}, headers=headers)
        assert r.status_code == 403
        assert c.app.state.manager.list() == []
        jid = upload(c, mp4).json()["id"]                     # no browser headers: a script, allowed
        for r in (c.delete(f"/api/jobs/{jid}", headers=headers),
                  c.post(f"/api/jobs/{jid}/cancel", headers=headers),
                  c.post(f"/api/jobs/{jid}/track", json={"mode": "auto"}, headers=headers)):
            assert r.status_code == 403
        job = c.get(f"/api/jobs/{jid}").json()
        assert job["status"] == "ready"                       # nothing changed


@pytest.mark.parametrize("headers", [
    {},
    {"origin": "http://localhost"},
    {"origin": "http://localhost:80"},
    {"origin": "http://LOCALHOST", "sec-fetch-site": "same-origin"},
    {"sec-fetch-site": "same-origin"},
    {"sec-fetch-site": "none"},
])
def test_same_origin_and_plain_clients_may_post(mp4, headers):
    with client() as c:
        r = upload(c, mp4, headers=headers)
        assert r.status_code == 201, r.text
        assert c.delete(f"/api/jobs/{r.json()['id']}", headers=headers).status_code == 204


def test_origin_must_match_the_host_port(mp4):
    with client() as c:
        h = {"host": "127.0.0.1:8000"}
        assert upload(c, mp4, headers={**h, "origin": "http://127.0.0.1:8000"}).status_code == 201
        assert upload(c, mp4, headers={**h, "origin": "http://localhost:8000"}).status_code == 403
        assert upload(c, mp4, headers={**h, "origin": "http://127.0.0.1:8001"}).status_code == 403


def test_cross_site_reads_get_no_cors(mp4):
    with client() as c:
        jid = upload(c, mp4).json()["id"]
        r = c.get(f"/api/jobs/{jid}", headers={"origin": "http://evil.example", "sec-fetch-site": "cross-site"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


# ------------------------------------------------------------------------------------------------ S5 --max-jobs
def test_max_jobs_holds_under_parallel_uploads(mp4):
    n_clients, limit = 10, 3
    with client(max_jobs=limit) as c:
        m = c.app.state.manager
        slow_probe = m._probe

        def probe(job):                       # widen the window between admission and registration
            time.sleep(0.15)
            return slow_probe(job)

        m._probe = probe
        barrier = threading.Barrier(n_clients)
        codes: list[int] = []

        def one():
            barrier.wait()
            codes.append(upload(c, mp4).status_code)

        threads = [threading.Thread(target=one) for _ in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(codes) == [201] * limit + [429] * (n_clients - limit)
        assert len(m.list()) == limit and len(list(m.root.iterdir())) == limit
        assert m.stats["jobs_evicted"] == 0 and m._pending == 0
        r = upload(c, mp4)
        assert r.status_code == 429 and "busy" in detail(r)


def test_only_long_idle_jobs_make_room(mp4):
    with client(max_jobs=2, evict_idle_s=60) as c:
        m = c.app.state.manager
        a = upload(c, mp4).json()["id"]
        b = upload(c, mp4).json()["id"]
        r = upload(c, mp4)                    # both are fresh: refused, neither is evicted
        assert r.status_code == 429
        assert c.get(f"/api/jobs/{a}").status_code == 200 and c.get(f"/api/jobs/{b}").status_code == 200
        m.get(a).touched -= 120               # a has been idle for 2 min
        r = upload(c, mp4)
        assert r.status_code == 201
        assert c.get(f"/api/jobs/{a}").status_code == 404 and not (m.root / a).exists()
        assert c.get(f"/api/jobs/{b}").status_code == 200
        assert m.stats["jobs_evicted"] == 1


def test_refused_uploads_release_their_slot(mp4):
    with client(max_jobs=1) as c:
        for _ in range(3):
            assert upload(c, b"not a video", "x.mp4").status_code == 400
        assert c.app.state.manager._pending == 0
        assert upload(c, mp4).status_code == 201


def test_error_bodies_are_json_one_line():
    with client() as c:
        r = c.get("/api/info", headers={"host": "evil.example"})
        assert r.headers["content-type"].startswith("application/json")
        assert json.loads(r.content)["detail"]
        r = c.post("/api/jobs/sample", json={"frames": 2}, headers={"origin": "http://evil.example"})
        assert r.headers["content-type"].startswith("application/json") and detail(r)


def test_security_page_exists():
    doc = Path(__file__).resolve().parents[1] / "docs" / "security.md"
    text = doc.read_text()
    for word in ("serve-web", "serve-igtl", "127.0.0.1", "--allowed-host", "--max-upload-mb", "ElementDataFile"):
        assert word in text, word
