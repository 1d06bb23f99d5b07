"""Tracker v2's needle segment: robust to blobs, keeps the dim tip, honours its prior, bounded in time."""
from __future__ import annotations

import time

import numpy as np
import pytest

from needletrack.geometry import line_mask
from needletrack.track.segment import fit_segment, fit_segment_scaled, segment_mask

H = W = 256


def _prob(noise=0.08, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, noise, (H, W)).astype(np.float32)


def test_blob_off_the_line_cannot_move_the_tip_and_dim_tip_is_kept():
    p = _prob()
    shaft = line_mask((H, W), (5, 40), (160, 120), 4)
    p[shaft] = 0.9
    dim = line_mask((H, W), (160, 120), (200, 141), 4)
    p[dim & ~shaft] = 0.3                                       # dimmer distal part and tip
    p[200:215, 20:35] = 0.97                                    # a bright stray blob
    s = fit_segment(p, threshold=0.5, low=0.2)
    tail, tip = s.ends_by_entry("left")
    assert abs(tip[0] - 200) < 4 and abs(tip[1] - 141) < 4     # the tip is the dim end, not the blob
    m = segment_mask((H, W), s, p >= 0.5)
    assert not m[200:215, 20:35].any()
    gt = shaft | dim
    assert (m & gt).sum() / (m | gt).sum() > 0.8


def test_nothing_above_threshold_is_no_segment():
    assert fit_segment(_prob(0.3), threshold=0.5, low=0.2) is None


def test_the_prior_wins_over_a_brighter_crossing_line():
    p = _prob()
    p[line_mask((H, W), (10, 60), (200, 140), 4)] = 0.7           # the needle
    p[line_mask((H, W), (20, 230), (240, 200), 5)] = 0.95         # a brighter, longer tissue line
    free = fit_segment(p, threshold=0.5, low=0.2)
    prior = fit_segment(np.where(line_mask((H, W), (10, 60), (200, 140), 4), 0.9, 0.0).astype(np.float32),
                        threshold=0.5, low=0.5)
    held = fit_segment(p, prior=prior, threshold=0.5, low=0.2)
    assert held.angle_to(prior) < 3 and held.offset_to(prior) < 3
    assert free.angle_to(prior) > 10                             # without the prior the brighter line wins


def test_contrast_separates_a_line_from_a_bright_region():
    p = _prob()
    p[line_mask((H, W), (10, 60), (200, 140), 4)] = 0.9
    line = fit_segment(p, threshold=0.5, low=0.2)
    q = _prob()
    q[60:200, 40:220] = 0.9                                       # a wide bright patch, not a shaft
    patch = fit_segment(q, threshold=0.5, low=0.2)
    assert line.contrast > 0.6 and patch.contrast < line.contrast - 0.3


def test_fit_is_fast_on_large_frames():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 0.1, (720, 960)).astype(np.float32)
    p[line_mask((720, 960), (0, 100), (600, 500), 8)] = 0.85
    fit_segment_scaled(p, None, 0.5, 0.25)
    t0 = time.perf_counter()
    for _ in range(5):
        s = fit_segment_scaled(p, None, 0.5, 0.25)
    ms = (time.perf_counter() - t0) / 5 * 1000
    assert s is not None and abs(s.length - np.hypot(600, 400)) < 30
    assert ms < 40        # generous on a busy 2-core machine; typically 3-6 ms


def test_motion_prior_carries_the_segment_with_the_image():
    import cv2

    from needletrack.track.segment import MotionPrior, Segment

    rng = np.random.default_rng(3)
    tex = cv2.GaussianBlur(rng.uniform(0, 1, (300, 300)).astype(np.float32), (0, 0), 2.0)
    a, b = tex[20:276, 20:276], tex[17:273, 15:271]          # content moves right 5 px and down 3 px
    seg = Segment((40.0, 60.0), (200.0, 150.0), 4.0, 0.9, 0.8, 180.0)
    mp = MotionPrior()
    assert mp.carry(a, None) is None
    moved = mp.carry(b, seg)
    assert moved.p0[0] - seg.p0[0] == pytest.approx(5, abs=0.7) and moved.p0[1] - seg.p0[1] == pytest.approx(3, abs=0.7)


def test_a_piece_ahead_on_the_line_is_the_tip_but_a_blob_beside_it_is_not():
    """A dim stretch (dropout) splits the network's mask; the piece beyond the gap on the same line is kept and
    becomes the tip, a blob of the same size off the line is not."""
    p = _prob()
    p[line_mask((H, W), (5, 40), (120, 98), 4)] = 0.9            # proximal shaft
    p[line_mask((H, W), (180, 128), (215, 145), 4)] = 0.8        # the tip, past a 60-px gap, on the same line
    p[line_mask((H, W), (150, 40), (185, 57), 4)] = 0.9          # a piece of the same shape, off the line
    s = fit_segment(p, threshold=0.5, low=0.2)
    m = segment_mask((H, W), s, p >= 0.5)
    from needletrack.track.segment import extend_to_mask

    tail, tip = extend_to_mask(s, m).ends_by_entry("left")
    assert m[133, 190] and not m[48, 167]
    assert abs(tip[0] - 215) < 4 and abs(tip[1] - 145) < 4
