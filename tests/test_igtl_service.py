"""The OpenIGTLink service against real pyigtl clients on 127.0.0.1 (ephemeral ports, bounded waits)."""
from __future__ import annotations

import logging
import socket
import struct
import time

import numpy as np
import pytest

import pyigtl

from needletrack.serve.igtl import IgtlConfig, IgtlService  # noqa: E402
from needletrack.serve.igtl_wire import encode_message, timestamp_to_raw  # noqa: E402
from test_igtl_helpers import (  # noqa: E402
    FakeTracker,
    RecordingClient,
    image_message,
    needle_frame,
    wait_until,
)

# an oblique image: 0.2 mm pixels, rotated 30 degrees in plane, origin off zero
_c, _s = np.cos(np.radians(30)), np.sin(np.radians(30))
MATRIX = np.array([[0.2 * _c, -0.2 * _s, 0.0, 10.0],
                   [0.2 * _s, 0.2 * _c, 0.0, -5.0],
                   [0.0, 0.0, 0.2, 3.0],
                   [0, 0, 0, 1]], dtype=np.float64)


@pytest.fixture
def make_service():
    made = []

    def make(tracker=None, **kw):
        kw.setdefault("log_interval_s", 0)
        # these stream tests start without a prompt, as `serve-igtl --auto` does (the default waits for one,
        # tested with auto_init=False below and in test_serve_igtl_waits_for_a_prompt_by_default)
        kw.setdefault("auto_init", True)
        cfg = IgtlConfig(host="127.0.0.1", port=0, **kw)
        svc = IgtlService(tracker if tracker is not None else FakeTracker(), cfg).start()
        made.append(svc)
        return svc

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def make_client():
    made = []

    def make(port):
        c = RecordingClient(port)
        made.append(c)
        assert c.wait_connected(), "pyigtl client did not connect"
        return c

    yield make
    for c in made:
        c.stop()


def _connected(svc, n=1):
    return wait_until(lambda: svc.stats()["clients"] == n, 5.0)


def test_stream_with_label_map_gets_mask_point_transform_per_frame(make_service, make_client):
    tracker = FakeTracker()
    svc = make_service(tracker, auto_init=False)
    cli = make_client(svc.address[1])
    assert _connected(svc)
    first = needle_frame(0)
    label = (first >= 200).astype(np.uint8)
    cli.send(image_message(label, 999.0, device="NeedleInit", matrix=MATRIX))
    n = 12
    sent_ts = []
    for i in range(n):  # lock-step: send, wait for its result, so no frame is dropped
        ts = 1000.0 + i * 0.04 + 1e-4
        sent_ts.append(ts)
        cli.send(image_message(needle_frame(i), ts, matrix=MATRIX))
        assert wait_until(lambda: len(cli.of("NeedleStatus")) == i + 1), f"no result for frame {i}"
    assert wait_until(lambda: len(cli.of("NeedleToReference")) == n)

    masks = cli.of("NeedleMask", "IMAGE")
    tips = cli.of("NeedleTip", "POINT")
    poses = cli.of("NeedleToReference", "TRANSFORM")
    assert len(masks) == len(tips) == len(poses) == n
    for i in range(n):
        assert masks[i].timestamp == tips[i].timestamp == poses[i].timestamp
        assert masks[i].timestamp == pytest.approx(sent_ts[i], abs=1e-6)
    # the first frame was initialised from the label map, the later ones not re-prompted
    assert np.array_equal(tracker.calls[0]["mask"], label.astype(bool))
    assert all(c["mask"] is None and not c["auto"] for c in tracker.calls[1:])
    # mask: uint8 (1, H, W), 0/255, on the input's ijk-to-world geometry
    m = masks[-1]
    assert m.image.shape == (1, 64, 64) and m.image.dtype == np.uint8
    assert set(np.unique(m.image)) == {0, 255}
    assert np.array_equal(m.image[0] > 0, needle_frame(n - 1) >= 200)
    assert np.allclose(m.ijk_to_world_matrix, MATRIX, atol=1e-4)
    # tip in world coordinates, pose at the tip with +x along the shaft
    res = tracker.step(needle_frame(n - 1))
    tip_w = MATRIX @ np.array([res.tip[0], res.tip[1], 0, 1])
    tail_w = MATRIX @ np.array([res.tail[0], res.tail[1], 0, 1])
    assert np.allclose(tips[-1].positions[0], tip_w[:3], atol=1e-3)
    pose = np.asarray(poses[-1].matrix)
    assert np.allclose(pose[:3, 3], tip_w[:3], atol=1e-3)
    axis = (tip_w - tail_w)[:3] / np.linalg.norm((tip_w - tail_w)[:3])
    assert np.allclose(pose[:3, 0], axis, atol=1e-4)
    assert np.allclose(pose[:3, :3].T @ pose[:3, :3], np.eye(3), atol=1e-4)
    # visibility and confidence as STRING and as header-v2 metadata
    status = cli.of("NeedleStatus", "STRING")[-1]
    assert "visible=true" in status.string and "score=0.9000" in status.string
    assert m.metadata["visible"] == "true" and float(m.metadata["score"]) == pytest.approx(0.9)
    st = svc.stats()
    assert st["received"] == n and st["processed"] == n and st["dropped"] == 0


def test_flood_drops_to_newest_and_keeps_latency_bounded(make_service, make_client):
    delay = 0.05
    tracker = FakeTracker(delay=delay)
    svc = make_service(tracker)
    cli = make_client(svc.address[1])
    assert _connected(svc)
    n = 120
    t0 = time.time()
    last_ts = None
    for i in range(n):  # as fast as pyigtl's client sends (~100 fps), the tracker does 20 fps
        last_ts = time.time()
        cli.send(image_message(needle_frame(i % 40), last_ts))
    send_s = time.time() - t0
    assert wait_until(lambda: svc.stats()["received"] == n, 10.0)
    # the newest frame is always processed
    assert wait_until(lambda: any(m.timestamp == pytest.approx(last_ts, abs=1e-6)
                                  for m in cli.of("NeedleMask")), 5.0)
    st = svc.stats()
    assert st["dropped"] > 0
    assert st["processed"] + st["dropped"] == n
    assert st["processed"] < n
    # latency from send to result stays near one tracker step, never grows with the backlog
    lat = [t - m.timestamp for t, m in cli.timed("NeedleMask")]
    assert len(lat) == st["processed"]
    backlog_s = n * delay - send_s  # what the last frame would wait behind an unbounded queue
    assert backlog_s > 2.0
    assert max(lat) < min(1.0, backlog_s / 2)
    assert np.percentile(lat, 50) < 0.5


def test_disconnect_and_reconnect_keeps_tracking_state(make_service, make_client, caplog):
    caplog.set_level(logging.INFO, logger="needletrack.serve.igtl")
    tracker = FakeTracker()
    svc = make_service(tracker)
    a = make_client(svc.address[1])
    assert _connected(svc)
    a.send(image_message(needle_frame(0), 10.0))
    assert wait_until(lambda: len(a.of("NeedleMask")) == 1)
    a.stop()
    assert wait_until(lambda: svc.stats()["clients"] == 0)
    assert wait_until(lambda: "disconnected" in caplog.text)
    b = make_client(svc.address[1])
    assert _connected(svc)
    for i in range(1, 4):
        b.send(image_message(needle_frame(i), 10.0 + i))
        assert wait_until(lambda: len(b.of("NeedleMask")) == i)
    st = svc.stats()
    assert st["processed"] == 4 and st["disconnects"] == 1 and st["connections"] == 2
    assert tracker.resets == 0  # state kept across the reconnect...
    assert [c["auto"] for c in tracker.calls] == [True, False, False, False]  # ...initialised once
    assert "tracking continues" in caplog.text  # ...and said so


def _raw(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def _closed_by_peer(s, timeout=5.0):
    s.settimeout(timeout)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_malformed_oversized_and_stalled_input_is_survived(make_service, make_client, caplog):
    caplog.set_level(logging.INFO, logger="needletrack.serve.igtl")
    svc = make_service(FakeTracker(), stall_timeout_s=0.3, max_message_bytes=1 << 20)
    port = svc.address[1]
    good = make_client(port)
    assert _connected(svc)

    # 1. garbage bytes: that connection is closed, with a log line
    s = _raw(port)
    s.sendall(b"\xde\xad\xbe\xef" * 40)
    assert _closed_by_peer(s)
    s.close()
    # 2. a header announcing a huge body
    s = _raw(port)
    hdr = struct.pack(">H12s20sIIQQ", 1, b"IMAGE", b"Image_Reference", 0, 0, 1 << 40, 0)
    s.sendall(hdr)
    assert _closed_by_peer(s)
    s.close()
    # 3. a sender that stalls half-way through a message
    s = _raw(port)
    s.sendall(encode_message(image_message(needle_frame(0), 5.0))[:300])
    assert _closed_by_peer(s, timeout=5.0)
    s.close()
    # 4. a well-framed message with a bad CRC, then a truncated IMAGE body with a correct CRC: both are
    #    skipped and the same connection still delivers a good frame afterwards
    s = _raw(port)
    bad = bytearray(encode_message(image_message(needle_frame(1), 6.0)))
    bad[-1] ^= 0xFF
    s.sendall(bytes(bad))
    msg = image_message(needle_frame(2), 7.0)
    packed = msg.pack()
    body = packed[58:][:-100]
    from needletrack.serve.igtl_wire import crc64

    hdr = packed[:42] + struct.pack(">QQ", len(body), crc64(body))
    s.sendall(hdr + body)
    s.sendall(encode_message(image_message(needle_frame(3), 8.0)))
    assert wait_until(lambda: svc.stats()["processed"] == 1)
    s.close()

    text = caplog.text
    assert "closed the connection" in text
    assert "limit" in text  # oversized
    assert "stalled" in text
    assert "CRC" in text
    assert "malformed IMAGE" in text
    st = svc.stats()
    assert st["malformed"] >= 5 and st["processed"] == 1
    # the well-behaved client was never disturbed and the service still works for it
    good.send(image_message(needle_frame(4), 9.0))
    assert wait_until(lambda: len(good.of("NeedleMask")) == 2)  # frame 8.0 was broadcast to it too


def test_size_change_midstream_reinitialises_from_last_mask(make_service, make_client, caplog):
    caplog.set_level(logging.INFO, logger="needletrack.serve.igtl")
    tracker = FakeTracker()
    svc = make_service(tracker)
    cli = make_client(svc.address[1])
    assert _connected(svc)
    for i in range(3):
        cli.send(image_message(needle_frame(i), 1.0 + i))
        assert wait_until(lambda: len(cli.of("NeedleMask")) == i + 1)
    big = needle_frame(3, h=80, w=96)
    cli.send(image_message(big, 5.0))
    assert wait_until(lambda: len(cli.of("NeedleMask")) == 4)
    m = cli.of("NeedleMask")[-1]
    assert m.image.shape == (1, 80, 96)
    assert tracker.resets == 1
    c = tracker.calls[-1]
    assert c["shape"] == (80, 96) and c["mask"] is not None and c["mask"].shape == (80, 96)
    assert c["mask"].sum() > 0  # the last 64x64 mask, rescaled
    assert "frame size changed from 64x64 to 96x80" in caplog.text


def test_reset_string_and_point_prompt(make_service, make_client, caplog):
    caplog.set_level(logging.INFO, logger="needletrack.serve.igtl")
    tracker = FakeTracker()
    svc = make_service(tracker, auto_init=False)
    cli = make_client(svc.address[1])
    assert _connected(svc)
    # no prompt yet and auto init off: frames are skipped, with one log line
    cli.send(image_message(needle_frame(0), 1.0, matrix=MATRIX))
    assert wait_until(lambda: svc.stats()["skipped"] == 1)
    assert "waiting for a first-frame prompt" in caplog.text
    # a POINT prompt in world coordinates -> first_line in pixels of the next frame
    p0, p1 = (3.0, 4.0), (20.0, 30.0)
    w0 = (MATRIX @ np.array([*p0, 0, 1]))[:3]
    w1 = (MATRIX @ np.array([*p1, 0, 1]))[:3]
    cli.send(pyigtl.PointMessage(positions=np.stack([w0, w1]), device_name="NeedleInit"))
    cli.send(image_message(needle_frame(1), 2.0, matrix=MATRIX))
    assert wait_until(lambda: len(tracker.calls) == 1)
    assert np.allclose(tracker.calls[0]["first_line"], (*p0, *p1), atol=1e-3)
    cli.send(image_message(needle_frame(2), 3.0, matrix=MATRIX))
    assert wait_until(lambda: len(tracker.calls) == 2)
    # reset: the tracker is reset and, without a new prompt, waits again
    cli.send(pyigtl.StringMessage("reset", device_name="Command"))
    cli.send(image_message(needle_frame(3), 4.0, matrix=MATRIX))
    assert wait_until(lambda: svc.stats()["skipped"] == 2)
    assert tracker.resets == 1 and len(tracker.calls) == 2
    assert "'reset' received" in caplog.text


def test_tracker_failure_is_logged_and_tracking_restarts(make_service, make_client, caplog):
    caplog.set_level(logging.INFO, logger="needletrack.serve.igtl")
    tracker = FakeTracker(fail_on={1})
    svc = make_service(tracker)
    cli = make_client(svc.address[1])
    assert _connected(svc)
    for i in range(3):
        cli.send(image_message(needle_frame(i), 1.0 + i))
        assert wait_until(lambda: svc.stats()["processed"] + svc.stats()["errors"] == i + 1)
    st = svc.stats()
    assert st["errors"] == 1 and st["processed"] == 2
    assert tracker.resets == 1 and tracker.calls[2]["auto"]  # re-initialised after the failure
    assert "tracker failed" in caplog.text


def test_source_mode_connects_to_plus_like_server_and_reconnects(make_service, make_client, caplog):
    caplog.set_level(logging.INFO, logger="needletrack.serve.igtl")
    plus = socket.socket()
    plus.bind(("127.0.0.1", 0))
    plus.listen(1)
    plus.settimeout(5)
    try:
        svc = make_service(FakeTracker(), source=("127.0.0.1", plus.getsockname()[1]),
                           reconnect_interval_s=0.05)
        slicer = make_client(svc.address[1])
        for round_ in range(2):  # the source goes away once and comes back
            conn, _ = plus.accept()
            assert wait_until(lambda: svc.stats()["source_connected"])
            for i in range(3):
                conn.sendall(encode_message(image_message(needle_frame(i), 100.0 * round_ + i),
                                            timestamp_to_raw(100.0 * round_ + i)))
                k = 3 * round_ + i + 1
                assert wait_until(lambda: len(slicer.of("NeedleMask")) == k)
            conn.close()
        assert "reconnected" in caplog.text
        assert svc.stats()["processed"] == 6
    finally:
        plus.close()


def test_sender_that_never_reads_results_is_still_served(make_service, make_client, caplog):
    caplog.set_level(logging.INFO, logger="needletrack.serve.igtl")
    svc = make_service(FakeTracker(), send_timeout_s=0.3, client_queue=2)
    port = svc.address[1]
    slicer = make_client(port)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    assert _connected(svc, 2)
    n = 40
    try:
        for i in range(n):
            s.sendall(encode_message(image_message(needle_frame(i % 30, h=384, w=384), 20.0 + i)))
            time.sleep(0.02)
        assert wait_until(lambda: svc.stats()["received"] == n, 10.0)
        assert wait_until(lambda: svc.stats()["send_stalls"] >= 1, 5.0)
        st = svc.stats()
        assert st["send_dropped"] > 0 and st["clients"] == 2 and st["disconnects"] == 0
        # the reading client got the newest frame's result
        assert wait_until(lambda: any(m.timestamp == pytest.approx(20.0 + n - 1, abs=1e-6)
                                      for m in slicer.of("NeedleMask")), 5.0)
        assert "has not read results" in caplog.text
    finally:
        s.close()


def test_periodic_status_line_and_stalled_sender_notice(make_service, make_client, caplog):
    caplog.set_level(logging.INFO, logger="needletrack.serve.igtl")
    svc = make_service(FakeTracker(), log_interval_s=0.3, idle_warning_s=0.4)
    cli = make_client(svc.address[1])
    assert _connected(svc)
    cli.send(image_message(needle_frame(0), 1.0))
    assert wait_until(lambda: "status: received 1, processed 1, dropped 0" in caplog.text, 5.0)
    assert wait_until(lambda: "no frames for" in caplog.text, 5.0)
    assert svc.stats()["clients"] == 1  # a silent sender is not dropped
    cli.send(image_message(needle_frame(1), 2.0))
    assert wait_until(lambda: "frames arriving again" in caplog.text, 5.0)
    assert wait_until(lambda: len(cli.of("NeedleMask")) == 2)


def test_serve_igtl_waits_for_a_prompt_by_default():
    from needletrack.serve.igtl import IgtlConfig

    assert IgtlConfig().auto_init is False
