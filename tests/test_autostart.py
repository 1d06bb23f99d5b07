"""Auto start by the training-free rules (``Tracker(detector=None)``, as without the learned detector's weights):
an entering needle is found within a few frames; a bright line that does not come in from the image's edge (a
tissue interface inside the image) is declined however long it holds. The learned rule: tests/test_detector.py."""
import math

import cv2
import numpy as np
import pytest

from needletrack.geometry import line_mask
from needletrack.track import Tracker, find_needle_line
from needletrack.track.autoinit import AutoInitConfig, _sample
from test_autoinit import speckle


def line_frame(p0, p1, h=120, w=160, seed=0, bright=255.0, width=3, shift=0):
    """Speckle (moved ``shift`` px to the right, as under probe motion) with a bright straight line p0-p1."""
    img = np.roll(speckle(h, w + 40, seed), shift, axis=1)[:, 20:20 + w]
    m = line_mask((h, w), p0, p1, width)
    rng = np.random.default_rng(seed + 1)
    img = np.where(m, np.maximum(img, bright * (0.7 + 0.3 * rng.random((h, w)))), img)
    return np.clip(img, 0, 255).astype(np.uint8), m


def entering(k, h=120, w=160, angle=35.0):
    """Frame k of a needle pushed in from the top-left edge: its visible length grows by 6 px a frame."""
    a = math.radians(angle)
    p0 = np.array([0.05 * w, 0.1 * h])
    p1 = p0 + (0.3 * math.hypot(h, w) + 6.0 * k) * np.array([math.cos(a), math.sin(a)])
    return line_frame(p0, p1, h, w, seed=100 + k)


def floating(k, h=120, w=160, angle=35.0):
    """Frame k of a bright line inside the tissue (both ends far from the border); the speckle moves."""
    a = math.radians(angle)
    c = np.array([0.5 * w, 0.5 * h])
    d = 0.17 * math.hypot(h, w) * np.array([math.cos(a), math.sin(a)])
    return line_frame(c - d, c + d, h, w, seed=200 + k, shift=k)


def test_entering_needle_is_found_within_five_frames():
    from needletrack.models import build_model

    tr = Tracker(build_model("stnan_tiny"), detector=None)
    for k in range(8):
        img, m = entering(k)
        r = tr.step(img, auto=(k == 0))
        if tr.initialised:
            break
    assert tr.initialised and tr.first_found <= 4
    assert r.source == "prompt" and not r.confirmed
    assert (r.mask & m).sum() / (r.mask | m).sum() > 0.4


def test_a_line_inside_the_image_is_declined_however_long_it_holds():
    from needletrack.models import build_model

    img, _ = floating(0)
    # the detector sees it (it is as bright and straight as the needle above) but its shallow end lies far
    # from where a needle comes in
    assert find_needle_line(img, AutoInitConfig(max_edge_frac=1.0)) is not None
    assert find_needle_line(img) is None
    tr = Tracker(build_model("stnan_tiny"), detector=None)
    for k in range(10):
        r = tr.step(floating(k)[0], auto=(k == 0))
        assert not tr.initialised and not r.visible and r.source == "search", k


@pytest.mark.parametrize("n", [5, 1024, 5000])
def test_sample_is_bilinear_for_any_count(n):
    rng = np.random.default_rng(n)
    img = rng.random((50, 70)).astype(np.float32)
    xs, ys = rng.uniform(0, 69, n), rng.uniform(0, 49, n)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    x1, y1 = np.minimum(x0 + 1, 69), np.minimum(y0 + 1, 49)
    fx, fy = xs - x0, ys - y0
    ref = (img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x1] * fx * (1 - fy) + img[y1, x0] * (1 - fx) * fy
           + img[y1, x1] * fx * fy)
    np.testing.assert_allclose(_sample(img, xs, ys), ref, atol=2e-3)


def dashed_needle(k, speed=6.0, shift=0, h=160, w=200, angle=30.0, bright=260.0, seed=0):
    """Frame k of a faint needle (CNR below the held rule's 4) coming in from the left edge at ``speed`` px a
    frame, its shaft's texture moving with it (fixed to the tip, as a real shaft's is); the speckle moves
    ``shift`` px a frame to the right (probe motion) and decorrelates a little."""
    a = math.radians(angle)
    u = np.array([math.cos(a), math.sin(a)])
    p0 = np.array([0.0, 0.15 * h])
    length = 0.3 * math.hypot(h, w) + speed * k
    p1 = p0 + length * u
    img = np.roll(speckle(h, w + 60, seed), shift * k, axis=1)[:, 30:30 + w]
    img = 0.9 * img + 0.1 * speckle(h, w, seed + 100 + k)
    m = line_mask((h, w), p0, p1, 3)
    ys, xs = np.nonzero(m)
    t = length - ((np.column_stack([xs, ys]) - p0) @ u)            # distance from the tip
    texture = cv2.GaussianBlur(np.random.default_rng(7).random((1, 400)).astype(np.float32), (0, 0), 1.5)[0]
    dash = 0.6 + 0.8 * (texture[np.clip(t.astype(int), 0, 399)] - 0.5)
    img[ys, xs] = np.maximum(img[ys, xs], bright * dash)
    return np.clip(img, 0, 255).astype(np.uint8), m


def run_auto(frames, cfg=None):
    from needletrack.models import build_model

    tr = Tracker(build_model("stnan_tiny"), autoinit_cfg=cfg, detector=None)
    for k, f in enumerate(frames):
        r = tr.step(f, auto=(k == 0))
        if tr.initialised:
            return tr, r, k
    return tr, r, None


def test_a_faint_needle_pushed_in_is_started_by_its_motion():
    frames, masks = zip(*(dashed_needle(k, shift=1) for k in range(8)))
    line = find_needle_line(frames[3])
    assert line is None or line.cnr < AutoInitConfig().start_min_cnr      # the held rule cannot start it
    tr, r, k = run_auto(frames)
    assert k is not None and k <= 5 and tr._confirmer.started_by == "pushed in"
    assert (r.mask & masks[k]).sum() / (r.mask | masks[k]).sum() > 0.3
    # without the pushed-in rule the same clip is never started
    assert run_auto(frames, AutoInitConfig(motion_start=False))[2] is None


@pytest.mark.parametrize("speed, shift", [(0.0, 1), (0.0, 3)])
def test_a_faint_line_that_is_not_pushed_in_is_not_started(speed, shift):
    """The same faint line held still in the image while the tissue moves under it never starts; with any
    line that holds 3 frames taken (no motion required) it would."""
    frames = [dashed_needle(k, speed=speed, shift=shift)[0] for k in range(10)]
    assert run_auto(frames)[2] is None
    anything = AutoInitConfig(motion_min_advance_frac=-1.0, motion_min_steps=0)
    assert run_auto(frames, anything)[2] is not None


def test_a_still_line_over_tissue_sliding_backwards_is_not_started():
    """A line fixed in the image (burned-in text, a static overlay) while the tissue slides against its axis
    moves "towards its tip relative to the tissue" without moving itself: the shaft's own motion must also go
    towards the tip (``motion_min_own_frac``). Without that test the same clip is started."""
    frames = [dashed_needle(k, speed=0.0, shift=-2)[0] for k in range(10)]
    assert run_auto(frames)[2] is None
    assert run_auto(frames, AutoInitConfig(motion_min_own_frac=-1.0))[2] is not None


def test_an_unconfirmed_start_that_loses_the_needle_searches_again():
    import torch

    from needletrack.errors import NeedletrackError
    from needletrack.models import build_model

    torch.manual_seed(0)            # an untrained model: its output must not depend on the tests run before
    model = build_model("stnan_tiny")
    blank = np.full((120, 160), 70, np.uint8)     # no line at all: nothing to carry, nothing to fit
    tr = Tracker(model, search_again_after=4, detector=None)
    k = 0
    while not tr.initialised and k < 8:
        tr.step(entering(k)[0], auto=(k == 0))
        k += 1
    assert tr.initialised and not tr.confirmed
    for j in range(4):
        r = tr.step(blank)
        assert not r.visible and r.source == "model"
    assert tr.searching and not tr.initialised     # back to the search after 4 frames with nothing
    assert tr.step(blank).source == "search"
    for k2 in range(8):                             # the needle comes in again and is started again
        r = tr.step(entering(k2)[0])
        if tr.initialised:
            break
    assert tr.initialised and r.source == "prompt" and not r.confirmed and k2 <= 4
    # a person's prompt is never dropped for a search
    tr = Tracker(model, search_again_after=2, detector=None)
    img, m = entering(3)
    tr.step(img, mask=m)
    for _ in range(6):
        tr.step(blank)
    assert tr.initialised and not tr.searching
    with pytest.raises(NeedletrackError):
        Tracker(model, search_again_after=0, detector=None)
