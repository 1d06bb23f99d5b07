"""Auto-init: the training-free detector finds a bright needle and declines on speckle alone."""
import math

import cv2
import numpy as np
import pytest

from needletrack.geometry import line_mask
from needletrack.track import Tracker, detect_needle, find_needle_line
from needletrack.track.autoinit import AutoInitConfig
from needletrack.track.autostart import estimate_shaft_width


def speckle(h, w, seed, mean=70.0):
    """Fully developed speckle: the envelope of low-passed complex Gaussian noise (Rayleigh statistics)."""
    rng = np.random.default_rng(seed)
    re = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.2)
    im = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.2)
    env = np.sqrt(re ** 2 + im ** 2)
    return mean * env / env.mean()


def needle_frame(angle, h=240, w=320, seed=0, bright=200.0, width=3, frac=0.5):
    img = speckle(h, w, seed)
    a = math.radians(angle)
    p0 = np.array([0.05 * w, 0.1 * h])
    p1 = p0 + frac * math.hypot(h, w) * np.array([math.cos(a), math.sin(a)])
    m = line_mask((h, w), p0, p1, width)
    rng = np.random.default_rng(seed + 1)
    img = np.where(m, np.maximum(img, bright * (0.7 + 0.3 * rng.random((h, w)))), img)
    return np.clip(img, 0, 255).astype(np.uint8), m, p0, p1


@pytest.mark.parametrize("angle", [20, 35, 50, 70])
def test_finds_a_bright_needle(angle):
    img, m, p0, p1 = needle_frame(angle, seed=angle)
    line = find_needle_line(img, AutoInitConfig(extend_to_border=False))
    assert line is not None
    assert abs(line.angle_deg - angle) < 2.0
    diag = math.hypot(*img.shape)
    # p1 is the tip (the deeper end), p0 the visible segment's other end
    assert math.dist(line.p0, p0) < 0.04 * diag and math.dist(line.p1, p1) < 0.04 * diag
    mask = detect_needle(img, AutoInitConfig(extend_to_border=False))
    assert mask.shape == img.shape and mask.dtype == bool
    iou = (mask & m).sum() / (mask | m).sum()
    assert iou > 0.5
    # by default the shaft is extended back to where it enters the image; the tip stays
    ext = find_needle_line(img)
    assert math.dist(ext.p1, line.p1) < 1.0
    assert min(ext.p0[0], ext.p0[1]) < 2.0 and math.dist(ext.p0, p1) > math.dist(line.p0, p1)


def test_finds_a_needle_in_a_non_square_16bit_frame():
    img, m, p0, p1 = needle_frame(40, h=200, w=400, seed=3)
    mask = detect_needle(img.astype(np.uint16) * 257)
    assert mask is not None and (mask & m).sum() / (mask | m).sum() > 0.5


@pytest.mark.parametrize("seed", range(6))
def test_declines_on_speckle_alone(seed):
    assert find_needle_line(speckle(240, 320, 100 + seed).astype(np.uint8)) is None


def test_declines_on_flat_gradient_and_faint_lines():
    assert detect_needle(np.full((120, 160), 80, np.uint8)) is None
    ramp = np.tile(np.linspace(0, 255, 160, dtype=np.float32), (120, 1)).astype(np.uint8)
    assert detect_needle(ramp) is None
    faint, *_ = needle_frame(35, seed=9, bright=75)       # no brighter than the tissue: not a needle
    assert detect_needle(faint) is None


def test_declines_on_flat_fascia_like_line():
    img, *_ = needle_frame(2, seed=5)                        # horizontal bright line: tissue layer, not a shaft
    assert detect_needle(img) is None


def test_estimate_shaft_width():
    h, w = 120, 200
    img = np.full((h, w), 40, np.uint8)
    img[line_mask((h, w), (10, 20), (180, 90), 7)] = 220
    assert abs(estimate_shaft_width(img, (10, 20), (180, 90)) - 7) <= 1.5
    # nothing along the line: the default is kept
    assert estimate_shaft_width(np.full((h, w), 40, np.uint8), (10, 20), (180, 90), default=4.0) == 4.0


def test_tracker_auto_waits_for_the_needle():
    """auto=True on frames without a needle reports not visible and keeps looking; with the held rule on, it
    starts once a confident line held for 3 frames. By default (held rule off) the same held line never starts."""
    from needletrack.models import build_model

    h, w = 120, 160
    img, m, *_ = needle_frame(35, h=h, w=w, seed=12, bright=255)     # CNR 4.3
    off = Tracker(build_model("stnan_tiny"), detector=None)
    for k in range(8):
        r = off.step(img, auto=(k == 0))
        assert not off.initialised and r.source == "search", k
    tr = Tracker(build_model("stnan_tiny"), autoinit_cfg=AutoInitConfig(held_start=True), detector=None)
    blank = [speckle(h, w, 50 + i).astype(np.uint8) for i in range(3)]
    r = tr.step(blank[0], auto=True)
    assert r.source == "search" and not r.visible and not tr.initialised
    assert not tr.step(blank[1]).visible and not tr.initialised
    faint, *_ = needle_frame(35, h=h, w=w, seed=11, bright=255)       # CNR 3.7: below start_min_cnr (4)
    for k in (2, 3, 4):                                   # a line held 3 frames, but too faint to start on
        r = tr.step(faint)
        assert r.source == "search" and not r.visible and not tr.initialised, k
    img, m, *_ = needle_frame(35, h=h, w=w, seed=12, bright=255)     # CNR 4.3: above it
    # it declines until the same line held for confirm_frames (3) frames: frames 5 and 6 still search
    for k in (5, 6):
        r = tr.step(img)
        assert r.source == "search" and not r.visible and not tr.initialised, k
    r = tr.step(img)
    assert tr.initialised and tr.first_found == 7 and r.source == "prompt" and r.visible
    assert not r.confirmed                                 # found without a person's prompt
    assert (r.mask & m).sum() / (r.mask | m).sum() > 0.4
    r = tr.step(img)
    assert r.source == "model" and r.frame_index == 8 and not r.confirmed


def test_auto_start_declines_a_line_that_does_not_hold():
    """A confident line seen in one frame only (then something else) never starts a track, even by the held rule."""
    from needletrack.models import build_model

    tr = Tracker(build_model("stnan_tiny"), autoinit_cfg=AutoInitConfig(held_start=True), detector=None)
    h, w = 120, 160
    a, *_ = needle_frame(35, h=h, w=w, seed=12, bright=255)     # CNR 4.3: would start if it held
    b = speckle(h, w, 7).astype(np.uint8)
    r = tr.step(a, auto=True)
    for f in (b, a, b, a, b):
        r = tr.step(f)
    assert not tr.initialised and not r.visible and r.source == "search"
