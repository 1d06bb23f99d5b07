"""serve-igtl memory limits (issue 14, S6): message bodies are read as they arrive, never allocated at the
size a header claims; one cap per message and one cap across all connections; only the offending
connection is closed and every other client keeps being served."""
from __future__ import annotations

import socket
import struct
import threading
import time

import numpy as np
import pytest

import pyigtl

from needletrack.serve.igtl import IgtlConfig, IgtlService  # noqa: E402
from needletrack.serve.igtl_wire import (  # noqa: E402
    HEADER_SIZE,
    ByteBudget,
    FramingError,
    MessageReader,
    encode_message,
    parse_header,
)
from test_igtl_helpers import FakeTracker, image_message, needle_frame, wait_until  # noqa: E402

MB = 1024 * 1024


def claim_header(body_size: int, mtype: bytes = b"IMAGE", device: bytes = b"Image_Reference") -> bytes:
    return struct.pack(">H12s20sIIQQ", 1, mtype, device, 0, 0, body_size, 0)


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def closed_by_peer(s: socket.socket, timeout: float = 5.0) -> bool:
    """True once the server has closed ``s`` (EOF or reset), False if it stays open for ``timeout``."""
    s.settimeout(0.1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return True
        if data == b"":
            return True
    return False


def read_messages(s: socket.socket, want_device: str, timeout: float = 5.0):
    """Read framed messages from ``s`` until one from ``want_device`` arrives; its header, or None."""
    s.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        while len(buf) >= HEADER_SIZE:
            h = parse_header(buf[:HEADER_SIZE])
            if len(buf) < HEADER_SIZE + h.body_size:
                break
            buf = buf[HEADER_SIZE + h.body_size:]
            if h.device == want_device:
                return h
        try:
            chunk = s.recv(1 << 16)
        except socket.timeout:
            return None
        if not chunk:
            return None
        buf += chunk
    return None


def tracked_roundtrip(port: int) -> bool:
    """A fresh client sends one frame and gets its mask back."""
    s = connect(port)
    try:
        s.sendall(encode_message(image_message(needle_frame(0), 123.0)))
        return read_messages(s, "NeedleMask") is not None
    finally:
        s.close()


@pytest.fixture
def service():
    made = []

    def make(**kw):
        kw.setdefault("log_interval_s", 0)
        kw.setdefault("auto_init", True)   # a stream without a prompt, as `serve-igtl --auto`
        svc = IgtlService(FakeTracker(), IgtlConfig(host="127.0.0.1", port=0, **kw)).start()
        made.append(svc)
        return svc

    yield make
    for s in made:
        s.stop()


def test_claimed_body_is_not_allocated_and_global_cap_drops_only_the_offender(service):
    svc = service(max_message_bytes=64 * MB, max_buffered_bytes=3 * MB, stall_timeout_s=30.0)
    port = svc.address[1]
    a = connect(port)
    b = connect(port)
    try:
        assert wait_until(lambda: svc.stats()["clients"] == 2)
        # A claims a 60 MB body and sends 1 MB of it: the server holds about 1 MB, not 60
        a.sendall(claim_header(60 * MB) + b"\0" * MB)
        assert wait_until(lambda: svc.stats()["buffered_bytes"] >= MB)
        time.sleep(0.2)
        assert MB <= svc.stats()["buffered_bytes"] <= MB + 64 * 1024
        # B claims 60 MB as well and sends 2.5 MB: 1 + 2.5 MB passes the 3 MB cap -> B (only) is closed
        b.sendall(claim_header(60 * MB))
        try:
            b.sendall(b"\0" * (5 * MB // 2))
        except OSError:
            pass
        assert closed_by_peer(b)
        assert wait_until(lambda: svc.stats()["clients"] == 1)
        assert wait_until(lambda: svc.stats()["buffered_bytes"] <= MB + 64 * 1024)
        assert svc.stats()["malformed"] >= 1
        # A is still connected, and other clients are served
        assert not closed_by_peer(a, timeout=0.3)
        assert tracked_roundtrip(port)
        assert svc.stats()["processed"] >= 1
    finally:
        a.close()
        b.close()
    # when A goes away its partial body is given back
    assert wait_until(lambda: svc.stats()["buffered_bytes"] == 0 and svc.stats()["clients"] == 0)


def test_claim_over_per_message_cap_closes_at_once_without_reading(service):
    svc = service(max_message_bytes=2 * MB, max_buffered_bytes=8 * MB)
    port = svc.address[1]
    ok = connect(port)
    bad = connect(port)
    try:
        assert wait_until(lambda: svc.stats()["clients"] == 2)
        bad.sendall(claim_header(60 * MB))
        assert closed_by_peer(bad)
        assert svc.stats()["buffered_bytes"] == 0
        assert not closed_by_peer(ok, timeout=0.3)
        ok.sendall(encode_message(image_message(needle_frame(1), 5.0)))
        assert read_messages(ok, "NeedleMask") is not None
    finally:
        ok.close()
        bad.close()


def test_reader_grows_with_arrived_bytes_and_releases_budget():
    a, b = socket.socketpair()
    budget = ByteBudget(10 * MB)

    def send_later(data):   # a socketpair's buffer is small: send from another thread while reading
        t = threading.Thread(target=lambda: a.sendall(data), daemon=True)
        t.start()
        return t

    try:
        b.settimeout(0.05)
        reader = MessageReader(b, max_body=64 * MB, stall_timeout=0.3, budget=budget)
        t = send_later(claim_header(60 * MB) + b"\0" * (MB // 2))
        with pytest.raises(FramingError, match="stalled"):
            reader.read()
        t.join(5)
        assert reader.buffered == 0 and budget.used == 0   # given back on failure
        # a complete message: counted while held, released by the next read()
        data = encode_message(pyigtl.StringMessage("x" * 5000, device_name="S"))
        t = send_later(data)
        h, body, _ = reader.read()
        t.join(5)
        assert len(body) == h.body_size and budget.used == h.body_size == reader.buffered
        reader.release()
        assert budget.used == 0
        tight = ByteBudget(1000)
        r2 = MessageReader(b, budget=tight, stall_timeout=0.3)
        t = send_later(data)
        with pytest.raises(FramingError, match="shared by all connections"):
            r2.read()
        t.join(5)
        assert tight.used == 0
    finally:
        a.close()
        b.close()


def test_cli_refuses_bad_limits(capsys):
    from needletrack.cli import main

    assert main(["serve-igtl", "--max-message-mb", "0"]) == 2
    assert main(["serve-igtl", "--max-message-mb", "64", "--max-buffered-mb", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--max-message-mb" in err[0] and "--max-buffered-mb" in err[1]
    assert np.all(["Traceback" not in e for e in err])
