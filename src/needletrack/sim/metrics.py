"""Needle contrast and the displayed line's width, measured on a rendered frame."""
from __future__ import annotations

import math

import numpy as np


def needle_cnr(frame: np.ndarray, mask: np.ndarray, needle: dict | None = None, gap_px: float | None = None,
               band_px: float | None = None) -> float | None:
    """Contrast-to-noise ratio of the needle: ``(mean(needle) - mean(bg)) / std(bg)`` on the 8-bit frame.

    Needle pixels: the mask. Background: pixels on the probe side of the shaft (above it, away from
    the comet tail and shadow) at perpendicular distance ``gap_px``..``gap_px + band_px`` from the
    shaft axis, within the shaft's extent along its axis, and not black (outside the image sector).
    The axis is tail->tip from ``needle`` if given, else the mask's principal axis.
    Returns None when the mask is empty or the background has fewer than 20 pixels.
    """
    frame = np.asarray(frame)
    mask = np.asarray(mask, bool)
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    if needle is not None and needle.get("tip") is not None and needle.get("tail") is not None:
        p0 = np.array(needle["tail"], float)
        p1 = np.array(needle["tip"], float)
        width = float(needle.get("width_px") or 0) or None
    else:
        pts = np.stack([xs, ys], 1).astype(float)
        c = pts.mean(0)
        w_, v = np.linalg.eigh(np.cov((pts - c).T) + 1e-9 * np.eye(2))
        ax = v[:, -1]
        pr = (pts - c) @ ax
        p0, p1 = c + pr.min() * ax, c + pr.max() * ax
        width = None
    d = p1 - p0
    L = float(np.hypot(*d))
    if L < 1:
        return None
    d /= L
    n = np.array([-d[1], d[0]])
    if n[1] > 0:  # make n point towards the probe (up)
        n = -n
    if width is None:
        width = mask.sum() / max(L, 1.0)
    gap = gap_px if gap_px is not None else max(width, 4.0)
    band = band_px if band_px is not None else max(2 * width, 10.0)
    H, W = mask.shape
    pad = int(gap + band + 2)
    xa, xb = max(int(min(p0[0], p1[0])) - pad, 0), min(int(max(p0[0], p1[0])) + pad + 1, W)
    ya, yb = max(int(min(p0[1], p1[1])) - pad, 0), min(int(max(p0[1], p1[1])) + pad + 1, H)
    yy, xx = np.mgrid[ya:yb, xa:xb].astype(float)
    rx, ry = xx - p0[0], yy - p0[1]
    t = rx * d[0] + ry * d[1]
    u = rx * n[0] + ry * n[1]
    sel = (u >= gap) & (u <= gap + band) & (t >= 0) & (t <= L)
    sub = frame[ya:yb, xa:xb]
    sel &= sub > 0
    sel &= ~mask[ya:yb, xa:xb]
    bg = sub[sel].astype(np.float64)
    if bg.size < 20:
        return None
    fg = frame[mask].astype(np.float64)
    sd = bg.std()
    if sd < 1e-6:
        return math.inf if fg.mean() > bg.mean() else 0.0
    return float((fg.mean() - bg.mean()) / sd)


def displayed_line_fwhm(frame, mask) -> list[float]:
    """FWHM (px) of the displayed front-wall line, per column across the middle half of the labelled shaft: the
    grey profile near the shaft's upper edge (the front wall), its peak over the tissue just above it."""
    g = np.asarray(frame, np.float64)
    m = np.asarray(mask, bool)
    xs = np.nonzero(m.any(axis=0))[0]
    out = []
    if xs.size < 8:
        return out
    for x in xs[xs.size // 4: 3 * xs.size // 4]:
        top = int(np.nonzero(m[:, x])[0][0])
        if top < 24 or top + 10 >= g.shape[0]:
            continue
        col = g[:, x]
        bg = float(np.median(col[top - 20: top - 8]))
        k = top - 4 + int(np.argmax(col[top - 4: top + 5]))
        peak = col[k]
        if peak - bg < 10:                      # no visible line in this column
            continue
        half = bg + 0.5 * (peak - bg)
        lo, hi = k, k
        while lo > 0 and col[lo - 1] >= half:
            lo -= 1
        while hi < len(col) - 1 and col[hi + 1] >= half:
            hi += 1
        # sub-pixel: interpolate both half-maximum crossings
        left = lo - (col[lo] - half) / max(col[lo] - col[lo - 1], 1e-9) if lo > 0 else float(lo)
        right = hi + (col[hi] - half) / max(col[hi] - col[hi + 1], 1e-9) if hi < len(col) - 1 else float(hi)
        out.append(float(right - left))
    return out
