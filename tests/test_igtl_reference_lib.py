"""serve-igtl against the reference OpenIGTLink C++ library (issue 15): a small client
(tests/igtl_reference_client.cxx), built against Debian's libopenigtlink-dev (1.11, protocol header v1), sends
IMAGE frames to `serve-igtl --header-version 1 --auto` and unpacks every reply with the library's CRC check.

Skips where the library or a C++ compiler is missing (CI: `apt-get install -y libopenigtlink-dev g++`). The
server is the real command in its own process; only its tracker is the scriptable stand-in of
test_igtl_helpers (what the wire carries does not depend on the model). The header v2 side is covered in
Python by test_igtl_session.py and test_igtl_wire.py (libopenigtlink 1.11 predates v2)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from net_helpers import free_port

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "igtl_reference_client.cxx"
INCLUDE_DIRS = ("/usr/include/openigtlink", "/usr/local/include/openigtlink")
FRAMES = 30
REPLIES = ("IMAGE NeedleMask", "POINT NeedleTip", "TRANSFORM NeedleToReference", "STRING NeedleStatus")

SERVER = """
import sys
sys.path.insert(0, {tests!r})
from test_igtl_helpers import FakeTracker
from needletrack.cli import main
from needletrack.commands import serve_igtl
serve_igtl._load_tracker = lambda model, device: FakeTracker()
sys.exit(main(["serve-igtl", "--port", {port!r}, "--header-version", "1", "--auto", "-q", "--log-interval", "0",
               "--stats-json", {stats!r}]))
"""


def _library() -> tuple[str, str] | None:
    """(include dir, compiler) when the reference library can be built against, else None."""
    cxx = shutil.which("g++") or shutil.which("c++")
    inc = next((d for d in INCLUDE_DIRS if Path(d, "igtlImageMessage.h").is_file()), None)
    if cxx is None or inc is None:
        return None
    return inc, cxx


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Path:
    found = _library()
    if found is None:
        pytest.skip("libopenigtlink-dev (OpenIGTLink C++ headers) or a C++ compiler is not installed")
    inc, cxx = found
    exe = tmp_path_factory.mktemp("igtlref") / "igtl_reference_client"
    r = subprocess.run([cxx, "-O1", "-o", str(exe), str(SOURCE), f"-I{inc}", "-lOpenIGTLink"],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and "lOpenIGTLink" in r.stderr and "cannot find" in r.stderr:
        pytest.skip("the OpenIGTLink library (libOpenIGTLink.so) is not installed")
    assert r.returncode == 0, f"building the reference client failed:\n{r.stderr[-3000:]}"
    return exe


def test_reference_library_unpacks_every_reply_of_serve_igtl_header_v1(client, tmp_path):
    import json

    port = free_port()
    stats = tmp_path / "stats.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    server = subprocess.Popen([sys.executable, "-c", SERVER.format(tests=str(HERE), port=str(port),
                                                                   stats=str(stats))],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r = subprocess.run([str(client), "127.0.0.1", str(port), str(FRAMES), str(len(REPLIES))],
                           capture_output=True, text=True, timeout=120)
    finally:
        server.send_signal(signal.SIGTERM)          # serve-igtl stops like Ctrl-C and writes its stats
        try:
            _, err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            _, err = server.communicate()
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and lines[-1] == f"ok {FRAMES * len(REPLIES)}", \
        f"client: {r.stdout[-2000:]}{r.stderr[-1000:]}\nserver: {err[-2000:]}"
    kinds = Counter(ln for ln in lines if ln in REPLIES)
    assert kinds == {k: FRAMES for k in REPLIES}
    # the order of one bundle, and the status STRING as the Python side writes it
    assert lines[:4] == list(REPLIES)
    status = [ln[len("status "):] for ln in lines if ln.startswith("status ")]
    assert len(status) == FRAMES and status[0].startswith("frame=0 visible=true")
    assert server.returncode == 0, err[-2000:]
    st = json.loads(stats.read_text())
    assert st["received"] == FRAMES and st["processed"] == FRAMES and st["malformed"] == 0
