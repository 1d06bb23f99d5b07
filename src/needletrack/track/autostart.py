"""Starting a track: the rule by which an unprompted start (``auto=True``) declines rather than guesses, and
the shaft width of a line prompt. The detector itself is :mod:`needletrack.track.autoinit`.

:class:`StartConfirmer` takes a line only once the training-free detector found the same confident line
(CNR >= ``AutoInitConfig.start_min_cnr``) in ``confirm_frames`` consecutive frames; chosen on the harness's
validation sets (docs/tracker.md).
"""
from __future__ import annotations

import math

import numpy as np

from needletrack.geometry import line_mask
from needletrack.track.autoinit import AutoInitConfig, NeedleLine, profile_stats, find_needle_line
from needletrack.track.frames import to_float01


def lines_agree(a: NeedleLine, b: NeedleLine, max_deg: float, max_offset: float) -> bool:
    """Same line: orientations within ``max_deg`` and a's midpoint within ``max_offset`` px of b's line."""
    da = np.subtract(a.p1, a.p0)
    db = np.subtract(b.p1, b.p0)
    na, nb = float(np.hypot(*da)), float(np.hypot(*db))
    if na < 1e-6 or nb < 1e-6:
        return False
    c = abs(float(da @ db)) / (na * nb)
    if math.degrees(math.acos(min(1.0, c))) > max_deg:
        return False
    m = (np.asarray(a.p0) + np.asarray(a.p1)) / 2.0 - np.asarray(b.p0)
    return abs(float(m[0] * db[1] - m[1] * db[0])) / nb <= max_offset


class StartConfirmer:
    """Auto start that declines rather than guesses (see ``AutoInitConfig.confirm_frames``):
    ``update(frame) -> mask | None``; a mask only once the same confident line held for the last
    ``confirm_frames`` frames."""

    def __init__(self, cfg: AutoInitConfig | None = None):
        self.cfg = cfg or AutoInitConfig()
        self.history: list[NeedleLine | None] = []

    def update(self, frame) -> np.ndarray | None:
        cfg = self.cfg
        line = find_needle_line(frame, cfg)
        if line is not None and line.cnr < cfg.start_min_cnr:
            line = None
        self.history = (self.history + [line])[-max(1, cfg.confirm_frames):]
        if len(self.history) < cfg.confirm_frames or any(x is None for x in self.history):
            return None
        h, w = np.asarray(frame).shape[:2]
        off = cfg.confirm_offset_frac * math.hypot(h, w)
        if not all(lines_agree(x, line, cfg.confirm_deg, off) for x in self.history[:-1]):
            return None
        m = line_mask((h, w), line.p0, line.p1, line.width_px)
        return m if m.any() else None


def estimate_shaft_width(frame, p0, p1, default: float | None = None) -> float:
    """Width (px) of the bright shaft along p0→p1 in ``frame`` (cross-profile FWHM), clipped to a sane range.

    Used to draw ``first_line`` prompts at the shaft's width."""
    img = to_float01(frame, "frame")
    h, w = img.shape
    lo, hi = 2.0, max(4.0, 0.08 * min(h, w))
    guess = default if default is not None else max(3.0, 0.01 * min(h, w))
    a, b = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    if np.hypot(*(b - a)) < 2:
        return float(np.clip(guess, lo, hi))
    cnr, width = profile_stats(img, a, b, guess)
    if cnr < 1.0:  # no visible shaft along the line: keep the default
        return float(np.clip(guess, lo, hi))
    if width > 1.5 * guess:  # wider than guessed: measure again with flanks that clear the shaft
        cnr2, width2 = profile_stats(img, a, b, width)
        if cnr2 >= 1.0:
            width = width2
    return float(np.clip(width, lo, hi))
