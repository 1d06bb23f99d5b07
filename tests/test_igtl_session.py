"""The OpenIGTLink service's tracking decisions without sockets or threads (needletrack.serve.igtl_session):
prompts, reset, re-initialisation, frame-size changes, tracker failures and the result messages."""
from __future__ import annotations

import numpy as np
import pytest

import pyigtl

from needletrack.serve.igtl import IgtlConfig
from needletrack.serve.igtl_session import Frame, IgtlSession, Output, Prompt
from needletrack.serve.igtl_wire import HEADER_SIZE, decode_message, encode_message, parse_header
from test_igtl_helpers import FakeTracker, needle_frame

# 0.5 mm pixels, origin at (10, -5, 3) mm
MATRIX = np.array([[0.5, 0, 0, 10.0], [0, 0.5, 0, -5.0], [0, 0, 0.5, 3.0], [0, 0, 0, 1]], dtype=np.float64)


def decoded(msg):
    """A pyigtl message as the service's reader hands it on: (header, decoded message)."""
    data = encode_message(msg)
    header = parse_header(data[:HEADER_SIZE])
    return header, decode_message(header, data[HEADER_SIZE:])


def frame(i=0, h=64, w=64, ts=1.5):
    return Frame(needle_frame(i, h, w), MATRIX.copy(), "RAS", (1, 2**31), ts, 0.0, "client test")


def session(tracker=None, **kw):
    cfg = IgtlConfig(port=None, **kw)
    return IgtlSession(tracker if tracker is not None else FakeTracker(), cfg)


def unpack(out: Output) -> list:
    """The bundle's bytes back into messages, each with its header."""
    got, data = [], out.data
    while data:
        h = parse_header(data[:HEADER_SIZE])
        got.append((h, decode_message(h, data[HEADER_SIZE:HEADER_SIZE + h.body_size])))
        data = data[HEADER_SIZE + h.body_size:]
    return got


# ---------------------------------------------------------------------------------------------- messages in
def test_interpret_frames_prompts_reset_and_ignored_messages():
    s = session()
    img = pyigtl.ImageMessage(needle_frame(0)[None], ijk_to_world_matrix=MATRIX, device_name="Image_Reference")
    got = s.interpret(*decoded(img), t_recv=7.0, peer="p")
    assert isinstance(got, Frame) and got.image.shape == (64, 64) and got.t_recv == 7.0 and got.peer == "p"
    np.testing.assert_allclose(got.matrix, MATRIX, atol=1e-5)

    label = np.zeros((1, 64, 64), np.uint8)
    label[0, 10:12, 5:40] = 1
    got = s.interpret(*decoded(pyigtl.ImageMessage(label, device_name="NeedleInit")), t_recv=0.0)
    assert isinstance(got, Prompt) and got.kind == "mask" and int(got.mask.sum()) == 70
    assert "70 needle pixels" in got.describe()

    pts = pyigtl.PointMessage(positions=[[10, -5, 3], [20, 0, 3], [1, 1, 1]], device_name="NeedleInit")
    got = s.interpret(*decoded(pts), t_recv=0.0)
    assert isinstance(got, Prompt) and got.kind == "points" and len(got.points) == 2

    assert s.interpret(*decoded(pyigtl.StringMessage(" RESET ", device_name="Cmd")), t_recv=0.0) == "reset"
    # ignored or rejected: an empty label map, one point, another command, another image device, a transform
    empty = pyigtl.ImageMessage(np.zeros((1, 8, 8), np.uint8), device_name="NeedleInit")
    one = pyigtl.PointMessage(positions=[[1, 2, 3]], device_name="NeedleInit")
    for m in (empty, one, pyigtl.StringMessage("start", device_name="Cmd"),
              pyigtl.ImageMessage(needle_frame(0)[None], device_name="Other"),
              pyigtl.TransformMessage(np.eye(4), device_name="ProbeToTracker")):
        assert s.interpret(*decoded(m), t_recv=0.0) is None
    assert s.counters["rejected"] == 2


def test_any_image_device_but_the_init_device():
    s = session(image_device="*")
    assert s.matches_image_device("Whatever") and not s.matches_image_device("NeedleInit")


# ---------------------------------------------------------------------------------------------- prompts
def test_without_a_prompt_frames_are_skipped_until_one_arrives():
    trk = FakeTracker()
    s = session(trk)
    assert s.process(frame(0)) is None and s.process(frame(1)) is None
    assert trk.calls == [] and s.counters["skipped"] == 2 and not s.initialised
    mask = needle_frame(2) >= 200
    out = s.process(frame(2), Prompt("mask", mask=mask))
    assert out is not None and s.initialised
    assert trk.calls[0]["mask"] is not None and np.array_equal(trk.calls[0]["mask"], mask)
    s.process(frame(3))
    assert trk.calls[1]["mask"] is None and not trk.calls[1]["auto"]     # tracking goes on without a prompt


def test_auto_init_starts_without_a_prompt():
    trk = FakeTracker()
    s = session(trk, auto_init=True)
    assert s.process(frame(0)) is not None
    assert trk.calls[0]["auto"] is True


def test_point_prompt_is_converted_from_world_to_pixels():
    trk = FakeTracker()
    s = session(trk)
    # pixel (x, y) -> world (10 + 0.5 x, -5 + 0.5 y, 3)
    s.process(frame(0), Prompt("points", points=[(11.0, -4.0, 3.0), (20.0, 0.0, 3.0)]))
    assert trk.calls[0]["first_line"] == pytest.approx((2.0, 2.0, 20.0, 10.0))


def test_a_prompt_that_does_not_fit_the_frame_is_rejected():
    trk = FakeTracker()
    s = session(trk)
    assert s.process(frame(0), Prompt("mask", mask=np.ones((32, 32), bool))) is None
    assert s.counters["rejected"] == 1 and s.counters["skipped"] == 1 and trk.calls == []


def test_a_new_prompt_reinitialises_a_running_track():
    trk = FakeTracker()
    s = session(trk, auto_init=True)
    s.process(frame(0))
    assert trk.resets == 0
    s.process(frame(1), Prompt("mask", mask=needle_frame(1) >= 200))
    assert trk.resets == 1 and trk.calls[1]["mask"] is not None


def test_reset_restarts_and_forgets_the_last_pose():
    trk = FakeTracker()
    s = session(trk)
    s.process(frame(0), Prompt("mask", mask=needle_frame(0) >= 200))
    assert s.last_pose is not None
    assert s.process(frame(1), reset=True) is None          # no prompt after the reset: waits again
    assert trk.resets == 1 and s.last_pose is None and s.last_mask is None and not s.initialised


# ---------------------------------------------------------------------------------------------- re-initialisation
def test_size_change_reinitialises_from_the_last_mask_rescaled():
    trk = FakeTracker()
    s = session(trk)
    s.process(frame(5), Prompt("mask", mask=needle_frame(5) >= 200))
    out = s.process(frame(6, h=96, w=80))
    assert out is not None and trk.resets == 1
    carried = trk.calls[1]["mask"]
    assert carried is not None and carried.shape == (96, 80) and carried.any()


def test_size_change_without_a_mask_waits_or_goes_automatic():
    blank = Frame(np.zeros((64, 64), np.uint8), MATRIX, "RAS", (0, 0), 0.0, 0.0, "p")
    for auto, expect_out in ((False, False), (True, True)):
        trk = FakeTracker()
        s = session(trk, auto_init=auto)
        s.process(blank, Prompt("mask", mask=needle_frame(0) >= 200))    # the fake finds nothing here
        assert s.initialised and not s.last_mask.any()
        out = s.process(Frame(np.zeros((48, 48), np.uint8), MATRIX, "RAS", (0, 0), 0.0, 0.0, "p"))
        assert (out is not None) == expect_out
        assert trk.resets == 1 and (trk.calls[-1]["auto"] if auto else len(trk.calls) == 1)


def test_tracker_failure_restarts_and_sends_nothing():
    trk = FakeTracker(fail_on={1})
    s = session(trk, auto_init=True)
    assert s.process(frame(0)) is not None
    assert s.process(frame(1)) is None
    assert s.counters["errors"] == 1 and trk.resets == 1 and not s.initialised
    assert s.process(frame(2)) is not None and trk.calls[2]["auto"] is True
    assert s.frame_index == 2                                    # numbered by frames sent


# ---------------------------------------------------------------------------------------------- results out
@pytest.mark.parametrize("version", [1, 2])
def test_result_bundle_in_header_v1_and_v2(version):
    s = session(auto_init=True, header_version=version, mask_value=200)
    out = s.process(frame(10, ts=12.25))
    got = unpack(out)
    assert [(h.type, h.device) for h, _ in got] == [("IMAGE", "NeedleMask"), ("POINT", "NeedleTip"),
                                                    ("TRANSFORM", "NeedleToReference"), ("STRING", "NeedleStatus")]
    assert all(h.version == version for h, _ in got)
    assert all(h.raw_timestamp == (1, 2**31) for h, _ in got)    # the frame's timestamp, bit for bit
    image, point, transform, status = (m for _, m in got)
    assert set(np.unique(image.image)) == {0, 200}
    assert status.string == " ".join(f"{k}={v}" for k, v in out.meta.items())
    assert out.meta["visible"] == "true" and out.meta["pose_current"] == "true" and out.meta["frame"] == "0"
    tip_px = [float(v) for v in out.meta["tip_px"].split(",")]
    np.testing.assert_allclose(point.positions[0], [10 + 0.5 * tip_px[0], -5 + 0.5 * tip_px[1], 3.0], atol=1e-4)
    np.testing.assert_allclose(transform.matrix[:3, 3], point.positions[0], atol=1e-4)
    if version == 2:
        assert all(m.metadata == out.meta for _, m in got)
    else:
        assert all(not getattr(m, "metadata", None) for _, m in got)


def test_invisible_frame_repeats_the_last_pose_marked_not_current():
    s = session(auto_init=True)
    first = unpack(s.process(frame(3)))
    blank = Frame(np.zeros((64, 64), np.uint8), MATRIX, "RAS", (0, 0), 0.0, 0.0, "p")
    out = s.process(blank)
    assert out.meta["visible"] == "false" and out.meta["pose_current"] == "false" and out.meta["tip_px"] == ""
    second = unpack(out)
    np.testing.assert_allclose(second[2][1].matrix, first[2][1].matrix)
    np.testing.assert_allclose(second[1][1].positions, first[1][1].positions)
