"""What the tracker reports for one frame (:class:`TrackResult`) and its printed forms: one record
(:meth:`TrackResult.as_record`) from which needle.csv's rows, the web page's rows and the OpenIGTLink status come.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TrackResult:
    frame_index: int
    mask: np.ndarray                       # H×W bool, frame size
    prob: np.ndarray                       # H×W float32 in [0, 1], frame size
    visible: bool
    score: float                           # mean probability inside the mask (0 when nothing is visible)
    tip: tuple[float, float] | None        # Kalman-smoothed (x, y) px; None when not visible
    tail: tuple[float, float] | None
    angle_deg: float | None                # to the horizontal, 0..90 going down (geometry convention)
    path: np.ndarray | None                # 2×2 [[tip_x, tip_y], [x, y]]: the shaft extended to the image border
    raw_tip: tuple[float, float] | None = None   # unsmoothed geometry from the mask
    raw_tail: tuple[float, float] | None = None
    area_px: int = 0
    source: str = "model"                  # "prompt" (first frame), "model", "search" (auto, nothing yet),
    #                                        "carried" (the last segment kept), "detector" (found again by it)
    memory_frames: list[int] = field(default_factory=list)
    confirmed: bool = True                 # False while an auto-found needle has not been prompted by a person
    segment_contrast: float | None = None  # policy "segment": ridge contrast of the fitted segment

    def csv_row(self, time_s: float | None = None, spacing_mm=None) -> list:
        """One needle.csv row (CSV_HEADER), formatted from :meth:`as_record`. ``spacing_mm``: [row_mm, col_mm]
        when known; the mm columns stay empty otherwise. Tip and tail in mm are measured from the image's
        top-left corner; ``length_mm`` is the needle length in view (tail to tip) and ``depth_mm`` the tip's
        depth below the top of the image (the probe face for a linear probe)."""
        rec = self.as_record(time_s, spacing_mm)
        row = []
        for key in CSV_HEADER:
            v = rec[key]
            if key == "frame":
                row.append(v)
            elif key in ("visible", "confirmed"):
                row.append(int(bool(v)))
            elif v is None:
                row.append("")
            else:
                row.append(f"{v:.{CSV_DECIMALS.get(key, 2)}f}")
        return row

    def as_record(self, time_s: float | None = None, spacing_mm=None) -> dict:
        """The result as one flat record: the one place its printed forms come from (needle.csv's CSV_HEADER
        columns, the web page's rows, the OpenIGTLink status string). Numbers are rounded as they are printed
        (time_s and score 4 decimals, px and degrees 2, mm 3); None where a value is absent, and the mm
        columns only with ``spacing_mm`` ([row_mm, col_mm]) and a visible shaft; plus ``area_px``. Read with
        getattr defaults, so ``TrackResult.as_record(result)`` also takes a tracker stand-in's result."""
        def r(v, nd):
            return None if v is None else round(float(v), nd)
        g = lambda name, default=None: getattr(self, name, default)  # noqa: E731
        tip, tail, frame, visible, score = g("tip"), g("tail"), g("frame_index"), g("visible"), g("score")
        rec = {"frame": None if frame is None else int(frame), "time_s": r(time_s, 4),
               "visible": None if visible is None else bool(visible), "score": r(score, 4),
               "tip_x": r(tip[0] if tip is not None else None, 2), "tip_y": r(tip[1] if tip is not None else None, 2),
               "tail_x": r(tail[0] if tail is not None else None, 2),
               "tail_y": r(tail[1] if tail is not None else None, 2),
               "angle_deg": r(g("angle_deg"), 2), "confirmed": bool(g("confirmed", True)),
               "tip_x_mm": None, "tip_y_mm": None, "tail_x_mm": None, "tail_y_mm": None, "length_mm": None,
               "depth_mm": None, "area_px": int(g("area_px", 0) or 0)}
        if spacing_mm is not None and tip is not None and tail is not None:
            sy, sx = float(spacing_mm[0]), float(spacing_mm[1])
            rec.update(tip_x_mm=r(tip[0] * sx, 3), tip_y_mm=r(tip[1] * sy, 3), tail_x_mm=r(tail[0] * sx, 3),
                       tail_y_mm=r(tail[1] * sy, 3),
                       length_mm=r(math.hypot((tip[0] - tail[0]) * sx, (tip[1] - tail[1]) * sy), 3),
                       depth_mm=r(tip[1] * sy, 3))
        return rec


CSV_HEADER = ["frame", "time_s", "visible", "score", "tip_x", "tip_y", "tail_x", "tail_y", "angle_deg", "confirmed",
              "tip_x_mm", "tip_y_mm", "tail_x_mm", "tail_y_mm", "length_mm", "depth_mm"]
CSV_DECIMALS = {"time_s": 4, "score": 4, "tip_x_mm": 3, "tip_y_mm": 3, "tail_x_mm": 3, "tail_y_mm": 3,
                "length_mm": 3, "depth_mm": 3}   # every other number: 2


def predicted_path(tip, tail, frame_hw) -> np.ndarray | None:
    """The shaft extended straight ahead of the tip to the image border: [[tip_x, tip_y], [end_x, end_y]]."""
    h, w = frame_hw
    d = np.array([tip[0] - tail[0], tip[1] - tail[1]], dtype=np.float64)
    n = float(np.hypot(*d))
    if n < 1e-6:
        return None
    d /= n
    # distance along d from the tip to the first border crossing
    ts = []
    for comp, pos, lim in ((d[0], tip[0], w - 1.0), (d[1], tip[1], h - 1.0)):
        if comp > 1e-9:
            ts.append((lim - pos) / comp)
        elif comp < -1e-9:
            ts.append((0.0 - pos) / comp)
    t = max(0.0, min(ts)) if ts else 0.0
    end = (tip[0] + t * d[0], tip[1] + t * d[1])
    return np.array([[tip[0], tip[1]], [end[0], end[1]]], dtype=np.float32)
