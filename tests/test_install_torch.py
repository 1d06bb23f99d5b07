"""scripts/install_torch.py: which torch build the Makefile installs (decisions only: nothing is installed)."""
import http.server
import importlib.util
import socket
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from net_helpers import free_port

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("install_torch", REPO / "scripts" / "install_torch.py")
IT = importlib.util.module_from_spec(spec)
sys.modules["install_torch"] = IT              # dataclasses look their module up
spec.loader.exec_module(IT)

PIN = "torch==2.13.0"


def closed_port_url() -> str:
    """An index URL on a local port nobody listens on: connecting is refused at once."""
    return f"http://127.0.0.1:{free_port()}/whl/cpu"


class _Index(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path.rstrip("/").endswith("/whl/cpu/torch"):
            body = (b"<!DOCTYPE html><html><body>"
                    b'<a href="/whl/cpu/torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_28_x86_64.whl">'
                    b"torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl</a></body></html>")
            self.send_response(200)
        else:
            body = b"not here"
            self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def fake_index():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/whl/cpu"
    srv.shutdown()
    srv.server_close()


def make_wheel(folder: Path, name: str, requires=()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    w = folder / name
    meta = "Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(w, "w") as z:
        z.writestr("torch-2.13.0.dist-info/METADATA", meta)
    return w


def native_tag() -> str:
    from pip._internal.utils.compatibility_tags import get_supported

    t = get_supported()[0]
    return f"{t.interpreter}-{t.abi}-{t.platform}"


def test_reachable_cpu_index_is_chosen(fake_index, tmp_path):
    local = make_wheel(tmp_path / "wheels", f"torch-2.13.0+cpu-{native_tag()}.whl")
    plan = IT.decide(PIN, index_url=fake_index, timeout=3, allow_cuda=False, platform="linux", installed=None,
                     locations=[str(local.parent)])
    assert plan.kind == "cpu-index"
    assert plan.pip_args == ["install", PIN, "--index-url", fake_index]
    assert "200 MB" in plan.message                      # the download size is said before it starts


def test_refused_index_falls_back_to_a_local_cpu_wheel_at_once(tmp_path):
    local = make_wheel(tmp_path / "wheels", f"torch-2.13.0+cpu-{native_tag()}.whl")
    t0 = time.perf_counter()
    plan = IT.decide(PIN, index_url=closed_port_url(), timeout=3, allow_cuda=False, platform="linux",
                     installed=None, locations=["https://example.invalid/simple", str(local.parent)])
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"the refused probe took {elapsed:.2f} s"
    assert plan.kind == "local-wheel" and plan.pip_args == ["install", str(local)]
    assert "refused" in plan.probe_error.lower()


def test_unreachable_index_and_no_local_wheel_refuses_cuda(tmp_path):
    plan = IT.decide(PIN, index_url=closed_port_url(), timeout=3, allow_cuda=False, platform="linux",
                     installed=None, locations=[str(tmp_path)])
    assert plan.kind == "refuse" and not plan.pip_args
    assert "NEEDLETRACK_ALLOW_CUDA_TORCH=1" in plan.message and IT.CPU_INDEX in plan.message
    plan = IT.decide(PIN, index_url=closed_port_url(), timeout=3, allow_cuda=True, platform="linux",
                     installed=None, locations=[str(tmp_path)])
    assert plan.kind == "default-index" and plan.pip_args == ["install", PIN]
    # off Linux the default index's torch is CPU-only: no need to refuse
    plan = IT.decide(PIN, index_url=closed_port_url(), timeout=3, allow_cuda=False, platform="darwin",
                     installed=None, locations=[])
    assert plan.kind == "default-index"


def test_local_wheels_that_are_cuda_or_foreign_or_another_version_are_ignored(tmp_path):
    d = tmp_path / "wheels"
    make_wheel(d, f"torch-2.13.0-{native_tag()}.whl", requires=["nvidia-cudnn-cu12==9.1", "filelock"])
    make_wheel(d, "torch-2.13.0+cpu-cp27-cp27m-win32.whl")
    make_wheel(d, f"torch-2.12.0+cpu-{native_tag()}.whl")
    assert IT.find_local_cpu_wheel("2.13.0", [str(d)]) is None
    # a wheel without '+cpu' but without nvidia requirements is a CPU build; file:// simple index layout
    ok = make_wheel(tmp_path / "simple" / "torch", f"torch-2.13.0-{native_tag()}.whl", requires=["filelock"])
    assert IT.find_local_cpu_wheel("2.13.0", [str(d), (tmp_path / "simple").as_uri()]) == ok


def test_already_installed_does_nothing():
    plan = IT.decide(PIN, index_url=closed_port_url(), timeout=3, installed="2.13.0+cpu", locations=[])
    assert plan.kind == "installed" and not plan.pip_args
    assert IT.decide(PIN, index_url=closed_port_url(), timeout=3, platform="linux", allow_cuda=False,
                     installed="2.12.0", locations=[]).kind == "refuse"


def test_a_silent_index_is_abandoned_after_the_timeout():
    s = socket.socket()                         # accepts connections (backlog) but never answers
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        t0 = time.perf_counter()
        ok, why = IT.probe_index(f"http://127.0.0.1:{s.getsockname()[1]}/whl/cpu", timeout=0.5)
        assert not ok and time.perf_counter() - t0 < 1.5
    finally:
        s.close()


def test_pip_config_locations_reads_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PIP_FIND_LINKS", f"{tmp_path} /nonexistent")
    locs = IT.pip_config_locations()
    assert str(tmp_path) in locs
    assert IT.local_dir(tmp_path.as_uri()) == tmp_path and IT.local_dir("https://pypi.org/simple") is None
