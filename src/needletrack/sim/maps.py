"""Smooth random maps for the synthetic anatomy: low-frequency noise (optionally oriented) and a fast wide blur."""
from __future__ import annotations

import math

import cv2
import numpy as np


def lowfreq(rng, shape, cell_y: float, cell_x: float) -> np.ndarray:
    """Smooth zero-mean unit-ish noise with correlation lengths ``cell_y`` x ``cell_x`` px."""
    H, W = shape
    gh = max(int(H / max(cell_y, 1)) + 3, 3)
    gw = max(int(W / max(cell_x, 1)) + 3, 3)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(g, (W, H), interpolation=cv2.INTER_CUBIC)


def oriented_lowfreq(rng, shape, cell_y: float, cell_x: float, angle_deg: float) -> np.ndarray:
    """:func:`lowfreq` with its long axis (``cell_x``) turned by ``angle_deg`` (structures follow the local
    layering, which is seldom exactly horizontal)."""
    H, W = shape
    if abs(angle_deg) < 1.0:
        return lowfreq(rng, shape, cell_y, cell_x)
    # knots on a grid in the turned frame, interpolated (bicubic) straight onto the canvas: one remap, no
    # oversized intermediate field
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    eu = (W * abs(c) + H * abs(s)) / 2.0
    ev = (W * abs(s) + H * abs(c)) / 2.0
    cx, cy = max(cell_x, 1.0), max(cell_y, 1.0)
    g = rng.standard_normal((int(2 * ev / cy) + 5, int(2 * eu / cx) + 5)).astype(np.float32)
    xs = (np.arange(W, dtype=np.float32) - np.float32(W / 2.0))[None, :]
    ys = (np.arange(H, dtype=np.float32) - np.float32(H / 2.0))[:, None]
    mx = (np.float32(c) * xs + np.float32(s) * ys + np.float32(eu)) * np.float32(1.0 / cx) + np.float32(1.5)
    my = (np.float32(-s) * xs + np.float32(c) * ys + np.float32(ev)) * np.float32(1.0 / cy) + np.float32(1.5)
    return cv2.remap(g, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a smooth map (shadows, enhancement, soft masks). A wide blur (sigma >= 4 px) runs on a
    grid decimated by ``D`` (area average, the blur at ~sigma/D, linear interpolation back): the same smooth map
    within a fraction of a percent of its range, at a fraction of the cost."""
    D = int(sigma / 2.0)
    H, W = x.shape[:2]
    if D < 2 or min(H, W) < 8 * D:
        return cv2.GaussianBlur(x, (0, 0), sigma)
    hs, ws = int(math.ceil(H / D)), int(math.ceil(W / D))
    xs = cv2.resize(x, (ws, hs), interpolation=cv2.INTER_AREA)
    sc = math.sqrt(max(sigma * sigma - D * D / 6.0, 1.0)) / D
    xs = cv2.GaussianBlur(xs, (0, 0), sc)
    return cv2.resize(xs, (W, H), interpolation=cv2.INTER_LINEAR)


def flow_lowfreq(rng, u: np.ndarray, v: np.ndarray, cell_u: float, cell_v: float) -> np.ndarray:
    """Smooth zero-mean noise that follows a flow: correlation length ``cell_u`` px along the streamlines
    (``v`` constant) and ``cell_v`` px across them, where ``u`` and ``v`` (float32 maps, px) are curvilinear
    coordinates along and across the flow. A knot grid in (u, v) interpolated (bicubic) straight onto the
    canvas: one remap, the cheap form of a line-integral texture along a curved flow field (structures stay
    continuous along the streamlines however they bend)."""
    u0, u1 = float(u.min()), float(u.max())
    v0, v1 = float(v.min()), float(v.max())
    cu, cv_ = max(cell_u, 1.0), max(cell_v, 1.0)
    g = rng.standard_normal((int((v1 - v0) / cv_) + 5, int((u1 - u0) / cu) + 5)).astype(np.float32)
    mx = (u - np.float32(u0)) * np.float32(1.0 / cu) + np.float32(1.5)
    my = (v - np.float32(v0)) * np.float32(1.0 / cv_) + np.float32(1.5)
    return cv2.remap(g, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
