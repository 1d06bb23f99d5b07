"""Needle geometry from a mask, and a line-mask drawer.

Coordinates are pixels, ``(x, y)`` with x to the right (column) and y down (row); pixel centres sit at
integer coordinates.

Rule for the tip (documented in docs/internals.md and the README):

1. Fit the principal axis of the mask's pixels (the eigenvector of their covariance with the largest
   eigenvalue, through their centroid). The two ends are the centroid moved along the axis to the
   smallest and the largest projection of any mask pixel.
2. The shaft enters the image from one border, ``entry_side`` (``"left"``, ``"right"`` or ``"top"``). Unless
   given, it is the border nearest to either end (the end nearest any of the left, right and top
   borders is the tail; the bottom border is never an entry side because the probe is at the top).
3. The tip is the end farther from the entry border, the tail the other end.

``angle_deg`` is the angle of the shaft to the image's horizontal (the skin line): 0..90 for a needle
going down into tissue (tip below tail), negative if the tip is above the tail.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

ENTRY_SIDES = ("left", "right", "top")


@dataclass(frozen=True)
class NeedleGeometry:
    tip: tuple[float, float]
    tail: tuple[float, float]
    angle_deg: float
    length_px: float
    entry_side: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tip"] = [float(v) for v in self.tip]
        d["tail"] = [float(v) for v in self.tail]
        return d


def _border_distance(p: np.ndarray, side: str, shape: tuple[int, int]) -> float:
    h, w = shape
    x, y = float(p[0]), float(p[1])
    if side == "left":
        return x
    if side == "right":
        return (w - 1) - x
    if side == "top":
        return y
    raise ValueError(f"entry_side must be one of {ENTRY_SIDES}, got {side!r}")


def needle_from_mask(mask, entry_side: str | None = None) -> NeedleGeometry | None:
    """Tip, tail, angle and length of the needle in a 2D mask; ``None`` if the mask is empty.

    ``mask``: H×W bool (or anything where nonzero is needle). ``entry_side`` overrides the inferred
    border ("left", "right" or "top").
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2D, got shape {m.shape}")
    if entry_side is not None and entry_side not in ENTRY_SIDES:
        raise ValueError(f"entry_side must be one of {ENTRY_SIDES}, got {entry_side!r}")
    ys, xs = np.nonzero(m)
    if xs.size == 0:
        return None
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    c = pts.mean(axis=0)
    if len(pts) == 1:
        axis = np.array([1.0, 0.0])
    else:
        d = pts - c
        cov = d.T @ d / len(pts)
        evals, evecs = np.linalg.eigh(cov)
        axis = evecs[:, int(np.argmax(evals))]
    proj = (pts - c) @ axis
    a = c + proj.min() * axis
    b = c + proj.max() * axis
    shape = m.shape
    if entry_side is None:
        best = None
        for side in ENTRY_SIDES:
            for end in (a, b):
                dist = _border_distance(end, side, shape)
                if best is None or dist < best[0]:
                    best = (dist, side)
        entry_side = best[1]
    da = _border_distance(a, entry_side, shape)
    db = _border_distance(b, entry_side, shape)
    tail, tip = (a, b) if da <= db else (b, a)
    dx, dy = tip[0] - tail[0], tip[1] - tail[1]
    length = float(math.hypot(dx, dy))
    angle = 0.0 if length == 0 else math.degrees(math.atan2(dy, abs(dx)))
    return NeedleGeometry(
        tip=(float(tip[0]), float(tip[1])),
        tail=(float(tail[0]), float(tail[1])),
        angle_deg=float(angle),
        length_px=length,
        entry_side=entry_side,
    )


def angle_difference_deg(a: float, b: float) -> float:
    """Difference between two line orientations in degrees, folded to 0..90 (lines have no direction)."""
    d = abs(float(a) - float(b)) % 180.0
    return min(d, 180.0 - d)


def shallow_first(p, q):
    """The two ends of a line as (tail, tip): the shallower end (smaller row, y) first."""
    return (p, q) if q[1] >= p[1] else (q, p)


def line_angle_deg(a0, a1, b0, b1) -> float | None:
    """Unsigned angle (0..90 degrees) between the lines a0-a1 and b0-b1; None where either is a point."""
    da, db = np.subtract(a1, a0).astype(np.float64), np.subtract(b1, b0).astype(np.float64)
    na, nb = float(np.hypot(*da)), float(np.hypot(*db))
    if na < 1e-6 or nb < 1e-6:
        return None
    return math.degrees(math.acos(min(1.0, abs(float(da @ db)) / (na * nb))))


def midpoint_offset(a0, a1, b0, b1) -> float:
    """Distance (px) of the midpoint of a0-a1 from the line through b0-b1 (from b0 where b is a point)."""
    db = np.subtract(b1, b0).astype(np.float64)
    nb = float(np.hypot(*db))
    m = (np.asarray(a0, np.float64) + np.asarray(a1, np.float64)) / 2.0 - np.asarray(b0, np.float64)
    if nb < 1e-12:
        return float(np.hypot(*m))
    return abs(float(m[0] * db[1] - m[1] * db[0])) / nb


def line_mask(shape: tuple[int, int], p0, p1, width_px: float) -> np.ndarray:
    """H×W bool mask of the segment p0→p1 (``(x, y)`` pixels) of the given total width.

    A pixel is set when its centre lies within ``width_px / 2`` of the segment (round caps). A width
    below 1 still draws the pixels the segment passes nearest (distance <= 0.5).
    """
    h, w = int(shape[0]), int(shape[1])
    out = np.zeros((h, w), dtype=bool)
    r = max(float(width_px) / 2.0, 0.5)
    x0, y0 = float(p0[0]), float(p0[1])
    x1, y1 = float(p1[0]), float(p1[1])
    xa = max(int(math.floor(min(x0, x1) - r)), 0)
    xb = min(int(math.ceil(max(x0, x1) + r)), w - 1)
    ya = max(int(math.floor(min(y0, y1) - r)), 0)
    yb = min(int(math.ceil(max(y0, y1) + r)), h - 1)
    if xa > xb or ya > yb:
        return out
    yy, xx = np.mgrid[ya:yb + 1, xa:xb + 1].astype(np.float64)
    vx, vy = x1 - x0, y1 - y0
    ll = vx * vx + vy * vy
    if ll == 0:
        t = np.zeros_like(xx)
    else:
        t = np.clip(((xx - x0) * vx + (yy - y0) * vy) / ll, 0.0, 1.0)
    dist2 = (xx - (x0 + t * vx)) ** 2 + (yy - (y0 + t * vy)) ** 2
    out[ya:yb + 1, xa:xb + 1] = dist2 <= r * r + 1e-9
    return out
