"""Auto start: an entering needle is found within a few frames; a bright line that does not come in from the
image's edge (a tissue interface inside the image) is declined however long it holds."""
import math

import cv2
import numpy as np
import pytest

from needletrack.geometry import line_mask
from needletrack.track import Tracker, find_needle_line
from needletrack.track.autoinit import AutoInitConfig, _sample


def speckle(h, w, seed, mean=70.0):
    """Fully developed speckle (as in test_autoinit)."""
    rng = np.random.default_rng(seed)
    re = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.2)
    im = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.2)
    env = np.sqrt(re ** 2 + im ** 2)
    return mean * env / env.mean()


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

    tr = Tracker(build_model("stnan_tiny"))
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
    tr = Tracker(build_model("stnan_tiny"))
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
