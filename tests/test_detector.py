"""The learned single-frame detector: the network, its file, the held-segment rule, and how the tracker uses it
(the auto start's learned rule, re-detection of a needle that came back)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from needletrack.errors import NeedletrackError
from needletrack.geometry import line_mask
from needletrack.models.detector import DetectorConfig, NeedleDetectorNet
from needletrack.track import Tracker
from needletrack.track.autoinit import AutoInitConfig
from needletrack.track.autostart import StartConfirmer
from needletrack.track.detector import HeldSegments, LearnedDetector, load_detector, save_detector
from needletrack.track.segment import Segment

from test_track import ScriptedEngine


class LineNet(NeedleDetectorNet):
    """A detector 'network' that answers a given needle line (logits +8 on it, -8 elsewhere) for the frames
    whose mean grey is above 0.25, and nothing for darker frames: the tracker's use of a detector, alone."""

    def __init__(self, p0, p1, size=64):
        super().__init__(DetectorConfig(input_size=size, widths=(4, 4, 4, 4, 4)))
        half = size // 2
        m = line_mask((half, half), (p0[0] / 2, p0[1] / 2), (p1[0] / 2, p1[1] / 2), 3.0)
        self.logits = torch.from_numpy(np.where(m, 8.0, -8.0).astype(np.float32))[None, None]

    def forward(self, x):
        return self.logits if float(x.mean()) > 0.25 else torch.full_like(self.logits, -8.0)


def test_network_shape_and_input_check():
    net = NeedleDetectorNet(DetectorConfig(input_size=64)).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 1, 64, 64)).shape == (2, 1, 32, 32)
        with pytest.raises(ValueError, match="multiple of 16"):
            net(torch.zeros(1, 1, 60, 64))
    assert 1e5 < sum(p.numel() for p in net.parameters()) < 5e5     # small: it runs beside the tracker


def test_file_round_trip_and_wrong_file(tmp_path):
    torch.manual_seed(0)
    net = NeedleDetectorNet(DetectorConfig(input_size=64, widths=(8, 8, 12, 12, 16))).eval()
    path = save_detector(net, tmp_path / "d.safetensors", {"seed": 1})
    back = load_detector(path)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x), back(x))
    assert back.cfg.widths == (8, 8, 12, 12, 16)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(NeedletrackError, match="not a needletrack detector"):
        load_detector(tmp_path / "other.safetensors")
    with pytest.raises(NeedletrackError, match="no detector weights"):
        load_detector(tmp_path / "absent.safetensors")


def test_find_fits_the_line_and_declines_without_one():
    det = LearnedDetector(LineNet((4, 10), (56, 40)))
    seg, prob = det.find(np.full((128, 128), 0.5, np.float32))      # frame twice the input: coordinates scale
    assert seg is not None and prob.shape == (128, 128)
    ends = sorted([seg.p0, seg.p1])
    assert np.allclose(ends[0], (8, 20), atol=8) and np.allclose(ends[1], (112, 80), atol=8)
    assert det.find(np.full((128, 128), 0.1, np.float32))[0] is None
    assert det.find(np.full((128, 128), 0.5, np.float32), min_score=1.01)[0] is None
    assert det.find(np.full((128, 128), 0.5, np.float32), min_length_frac=0.8)[0] is None
    # a needle comes in from the imaged region's border: a line that starts in the middle is refused by the edge rule
    inner = LearnedDetector(LineNet((24, 30), (48, 40)))
    frame = np.full((128, 128), 0.5, np.float32)
    assert inner.find(frame, max_edge_frac=0.1)[0] is None and inner.find(frame)[0] is not None
    assert det.find(frame, max_edge_frac=0.1)[0] is not None


def _seg(x0, y0, x1, y1):
    return Segment((x0, y0), (x1, y1), 3.0, 0.9, 0.8, float(np.hypot(x1 - x0, y1 - y0)))


def test_held_segments():
    h = HeldSegments(3, 6.0, 0.02)
    a = _seg(0, 10, 100, 50)
    assert not h.update(a, 200) and not h.update(a, 200) and h.update(_seg(1, 11, 101, 51), 200)
    assert not h.update(None, 200) and not h.update(a, 200)             # a gap starts the count again
    h.clear()
    h.update(a, 200)
    h.update(a, 200)
    assert not h.update(_seg(0, 60, 100, 100), 200)                      # another line: not held


def test_auto_start_by_the_learned_rule():
    det = LearnedDetector(LineNet((4, 10), (56, 40)))
    sc = StartConfirmer(AutoInitConfig(learned_frames=2), detector=det)
    frame = np.full((64, 64), 0.5, np.float32)
    assert sc.update(frame) is None
    m = sc.update(frame)
    assert m is not None and sc.started_by == "seen"
    assert (m & line_mask((64, 64), (4, 10), (56, 40), 6)).sum() >= 0.8 * m.sum()
    off = StartConfirmer(AutoInitConfig(learned_frames=2, learned_start=False, motion_start=False), detector=det)
    assert off.update(frame) is None and off.update(frame) is None


def test_tracker_redetects_a_needle_that_came_back():
    line = line_mask((64, 64), (4, 10), (56, 40), 4)
    empty = np.zeros((64, 64), np.float32)
    # the network sees the needle, loses it for good (it left, then came back where the network cannot see it)
    seq = [line * 0.95] * 2 + [empty] * 8
    dark, bright = np.full((64, 64), 40, np.uint8), np.full((64, 64), 128, np.uint8)
    frames = [dark] * 6 + [bright] * 4          # the detector answers only on the bright frames (6..9)

    def run(**kw):
        tr = Tracker(ScriptedEngine(list(seq)), mem_every=5, **kw)
        tr.step(dark, mask=line)
        steps = []                                   # the tip/tail filter's steps, frame by frame
        for name in ("predict", "update"):
            orig = getattr(tr.kalman, name)
            setattr(tr.kalman, name, lambda *a, _o=orig, _n=name, **k: (steps.append(_n), _o(*a, **k))[1])
        out = []
        for f in frames:
            n = len(steps)
            out.append(tr.step(f))
            assert len(steps) - n == 1, steps[n:]    # one filter step per frame, re-detected frames included
        return tr, out

    tr, res = run(detector=LearnedDetector(LineNet((4, 10), (56, 40))), redetect=True, redetect_frames=2)
    assert [r.visible for r in res] == [True, True, False, False, False, False, False, True, True, True]
    assert [r.source for r in res[7:]] == ["detector"] * 3
    assert all(r.tip is not None and (r.mask & line).sum() >= 0.6 * line.sum() for r in res[7:])
    assert res[7].confirmed                      # a person's track stays confirmed
    assert tr.memory.frames == [0, 8]            # the first frame found again is written to memory
    _tr, off = run(detector=None)
    assert not any(r.visible for r in off[2:])
    _tr, nomem = run(detector=LearnedDetector(LineNet((4, 10), (56, 40))), redetect=True, redetect_memory=False)
    assert [r.source for r in nomem[7:]] == ["detector"] * 3
    _tr, default = run(detector=LearnedDetector(LineNet((4, 10), (56, 40))))      # off by default
    assert not any(r.visible for r in default[2:])
    assert _tr.memory.frames == [0]


def test_two_channel_detector_sees_the_change_since_the_previous_frame():
    torch.manual_seed(0)
    det = LearnedDetector(NeedleDetectorNet(DetectorConfig(input_size=64, in_channels=2)).eval())
    rng = np.random.default_rng(0)
    a = rng.random((80, 96)).astype(np.float32)
    b = np.clip(a + 0.2 * (rng.random((80, 96)) - 0.5), 0, 1).astype(np.float32)
    p_still, p_none, p_moved = det.prob(a, prev=a), det.prob(a), det.prob(a, prev=b)
    assert p_still.shape == (80, 96)
    assert np.allclose(p_still, p_none, atol=1e-6)        # no previous frame reads as no change
    assert float(np.abs(p_moved - p_still).max()) > 1e-4
    with pytest.raises(ValueError, match="in_channels"):
        NeedleDetectorNet(DetectorConfig(in_channels=3))
    # frames that do not correlate (speckle drawn afresh) carry no motion: the frame is seen alone
    fresh = rng.random((80, 96)).astype(np.float32)
    assert np.allclose(det.prob(a, prev=fresh), p_none, atol=1e-6)
    det.max_change = None
    assert float(np.abs(det.prob(a, prev=fresh) - p_none).max()) > 1e-4


def test_shipped_detector_starts_on_simulated_needles_and_declines_needle_free_clips():
    """The shipped weights, end to end through the tracker's auto start: the easy preset's needle is found (IoU >=
    0.5 within 12 frames) by the learned rule, and a needle-free clip reports nothing."""
    from needletrack.eval.metrics import frame_iou
    from needletrack.sim import simulate_sequence
    from needletrack.track.detector import default_detector_available

    assert default_detector_available()            # weights/detector.safetensors ships with the repository
    for seed in (0, 3, 4):
        tr = Tracker.from_pretrained("default", engine="torch")
        found = None
        for i, (f, m, _n) in enumerate(simulate_sequence(13, size=256, preset="easy", seed=seed, frame_step=2)):
            r = tr.step(f, auto=(i == 0))
            if found is None and r.visible and m.any() and frame_iou(r.mask, m) >= 0.5:
                found = i
        assert found is not None and tr.started_by == "seen", seed
        assert not r.confirmed                     # an auto start stays unconfirmed
    tr = Tracker.from_pretrained("default", engine="torch")
    frames = simulate_sequence(20, size=256, preset="clinical", seed=5, needle="absent")
    assert not any(tr.step(f, auto=(i == 0)).visible for i, (f, _m, _n) in enumerate(frames))


def test_previous_frame_is_letterboxed_once_and_a_reused_buffer_is_not_mistaken(monkeypatch):
    torch.manual_seed(0)
    det = LearnedDetector(NeedleDetectorNet(DetectorConfig(input_size=64, in_channels=2)).eval())
    rng = np.random.default_rng(1)
    a = rng.random((80, 96)).astype(np.float32)
    b = np.clip(a + 0.05 * (rng.random((80, 96)) - 0.5), 0, 1).astype(np.float32)
    fresh = LearnedDetector(det.model).prob(b, prev=a)         # no history: both frames letterboxed here
    det.prob(a)
    calls = []
    from needletrack.track.letterbox import Letterbox

    orig = Letterbox.forward
    monkeypatch.setattr(Letterbox, "forward", lambda self, z: (calls.append(1), orig(self, z))[1])
    assert np.allclose(det.prob(b, prev=a), fresh, atol=1e-6) and len(calls) == 1   # a: the kept copy
    buf = b.copy()
    det.prob(buf)
    buf[:] = a                                                  # the caller's buffer written over in place
    calls.clear()
    assert np.allclose(det.prob(b, prev=buf), fresh, atol=1e-6) and len(calls) == 2
