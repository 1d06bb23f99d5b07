"""The metrics of docs/design.md §5, one definition everywhere: the scoring core (per-frame counts and the
pooled accumulator). It sits in the bottom layer so the tracker (`track --gt`) and training validation score
with it without importing `needletrack.eval`; folder evaluation (`needletrack evaluate`) is in
:mod:`needletrack.eval.metrics`.

* The given first frame of a sequence is never scored (``update(..., first=True)`` skips it).
* Over the scored frames, TP, FP and FN are summed over pixels ("pooled" / micro):
  IoU = TP/(TP+FP+FN), Dice = 2TP/(2TP+FP+FN), Precision = TP/(TP+FP), Recall = TP/(TP+FN),
  F1 = 2PR/(P+R) (equal to Dice). A ratio whose denominator is 0 is 1.0 when TP = FP = FN = 0 (nothing
  to find and nothing found) and 0.0 otherwise (so F1 stays equal to Dice).
* ``per_frame_iou``: mean IoU over scored frames whose ground truth is non-empty (null if none).
* ``empty_frame_accuracy``: share of scored frames with empty ground truth predicted empty (null if none).
* ``tip_error_px`` / ``tip_error_mm`` / ``angle_error_deg``: means over scored frames where both masks are
  non-empty. Geometry comes from :func:`needletrack.geometry.needle_from_mask`; the prediction uses the
  ground truth's entry side so that "tip" means the same end. mm uses the sequence's pixel spacing
  ``[row, col]`` in mm and is null when unknown. Angle error is the difference of line orientations (0..90).
* ``frames``: number of scored frames.

Overall figures pool every scored frame of every sequence (they are not means of sequence figures).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from needletrack.geometry import angle_difference_deg, needle_from_mask
from needletrack.io.spacing import parse_spacing

RESULT_KEYS = ("iou", "dice", "precision", "recall", "f1", "per_frame_iou", "empty_frame_accuracy",
               "tip_error_px", "tip_error_mm", "angle_error_deg", "frames")


def _ratio(num: float, den: float, all_zero: bool) -> float:
    if den == 0:
        return 1.0 if all_zero else 0.0
    return float(num) / float(den)


def confusion(pred, gt) -> tuple[int, int, int]:
    """(TP, FP, FN) pixel counts of two boolean masks of the same shape."""
    p = np.asarray(pred, dtype=bool)
    g = np.asarray(gt, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth shape {g.shape}")
    tp = int(np.count_nonzero(p & g))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(g)) - tp


def scores_from_counts(tp: int, fp: int, fn: int) -> dict:
    """IoU, Dice, Precision, Recall, F1 from pooled counts (zero-denominator rule in the module doc)."""
    z = tp == 0 and fp == 0 and fn == 0
    p = _ratio(tp, tp + fp, z)
    r = _ratio(tp, tp + fn, z)
    return {
        "iou": _ratio(tp, tp + fp + fn, z),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, z),
        "precision": p,
        "recall": r,
        "f1": _ratio(2 * p * r, p + r, z),
    }


def frame_iou(pred, gt) -> float:
    tp, fp, fn = confusion(pred, gt)
    return scores_from_counts(tp, fp, fn)["iou"]


@dataclass
class MetricAccumulator:
    """Streaming accumulator of the metrics (docs/design.md §5) for one sequence (or, by ``merge``, a whole set).

    ``acc.update(pred_bool, gt_bool, first=False)`` per frame, then ``acc.result()``.
    ``pixel_spacing_mm``: ``[row, col]`` mm, or None; ``entry_side`` overrides the tip rule for both masks.
    """

    pixel_spacing_mm: tuple[float, float] | None = None
    entry_side: str | None = None
    tp: int = 0
    fp: int = 0
    fn: int = 0
    frames: int = 0
    iou_sum: float = 0.0
    nonempty_frames: int = 0
    empty_frames: int = 0
    empty_correct: int = 0
    tip_px_sum: float = 0.0
    tip_mm_sum: float = 0.0
    tip_frames: int = 0
    tip_mm_frames: int = 0
    angle_sum: float = 0.0

    def __post_init__(self):
        if self.pixel_spacing_mm is not None:
            self.pixel_spacing_mm = parse_spacing(self.pixel_spacing_mm)

    def update(self, pred, gt, first: bool = False) -> dict | None:
        """Score one frame. Returns the frame's own figures (None for the unscored first frame)."""
        if first:
            return None
        p = np.asarray(pred, dtype=bool)
        g = np.asarray(gt, dtype=bool)
        tp, fp, fn = confusion(p, g)
        self.tp += tp
        self.fp += fp
        self.fn += fn
        self.frames += 1
        rec = {"tp": tp, "fp": fp, "fn": fn, "iou": None, "tip_error_px": None, "tip_error_mm": None,
               "angle_error_deg": None}
        gt_empty = (tp + fn) == 0
        if gt_empty:
            self.empty_frames += 1
            if fp == 0:
                self.empty_correct += 1
            return rec
        iou = tp / (tp + fp + fn)
        rec["iou"] = iou
        self.iou_sum += iou
        self.nonempty_frames += 1
        if tp + fp == 0:
            return rec
        gg = needle_from_mask(g, entry_side=self.entry_side)
        pg = needle_from_mask(p, entry_side=gg.entry_side)
        dx = pg.tip[0] - gg.tip[0]
        dy = pg.tip[1] - gg.tip[1]
        tip_px = math.hypot(dx, dy)
        ang = angle_difference_deg(pg.angle_deg, gg.angle_deg)
        self.tip_frames += 1
        self.tip_px_sum += tip_px
        self.angle_sum += ang
        rec["tip_error_px"] = tip_px
        rec["angle_error_deg"] = ang
        if self.pixel_spacing_mm is not None:
            sy, sx = self.pixel_spacing_mm
            tip_mm = math.hypot(dx * sx, dy * sy)
            self.tip_mm_sum += tip_mm
            self.tip_mm_frames += 1
            rec["tip_error_mm"] = tip_mm
        return rec

    def merge(self, other: "MetricAccumulator") -> "MetricAccumulator":
        """Add another accumulator's counts into this one (for overall figures); returns self."""
        for f in fields(self):
            if f.name in ("pixel_spacing_mm", "entry_side"):
                continue
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def result(self) -> dict:
        """The keys of RESULT_KEYS plus the raw counts tp, fp, fn (null where undefined)."""
        out = scores_from_counts(self.tp, self.fp, self.fn)
        out["per_frame_iou"] = self.iou_sum / self.nonempty_frames if self.nonempty_frames else None
        out["empty_frame_accuracy"] = self.empty_correct / self.empty_frames if self.empty_frames else None
        out["tip_error_px"] = self.tip_px_sum / self.tip_frames if self.tip_frames else None
        out["tip_error_mm"] = self.tip_mm_sum / self.tip_mm_frames if self.tip_mm_frames else None
        out["angle_error_deg"] = self.angle_sum / self.tip_frames if self.tip_frames else None
        out["frames"] = self.frames
        out["tp"], out["fp"], out["fn"] = self.tp, self.fp, self.fn
        return out
