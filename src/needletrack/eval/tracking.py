"""Figures of the tracking evaluation (the measurement harness), from per-frame masks of one run.

Everything here is a pure function of ground-truth and predicted masks per frame, so a run of any
tracker (today's, an old commit's, optical-flow propagation) is scored by the same code.

Definitions (frame 0 is the prompt frame and is never scored):

* **pooled IoU / Dice, empty-frame accuracy, tip error (px, mm)**: :class:`MetricAccumulator` (docs/design.md §5);
  the tip is the end away from the sequence's entry side (from its meta.json where known).
* **withdrawal episode**: a maximal run of frames with empty ground truth that follows a frame showing
  the needle. It is *reported empty within 2 frames* when the prediction is empty on at least one of the
  first 3 frames of the run (its first frame, or 1 or 2 frames later) that still lie inside the run.
* **re-entry**: the first frame showing the needle after a withdrawal episode. It is *re-found within 5
  frames* when the prediction reaches IoU >= 0.5 on one of that frame and the next 4 (while the needle is
  shown).
* **drift** (still-needle sequences): mean IoU over frames ``late-2 .. late+2`` (default late = 300)
  divided by the mean IoU over frames 8..12, per sequence; the figure is the mean over sequences of the
  ratio and of the late IoU.
* **found within 10 frames** (``--auto`` on needle clips, which start where the needle appears): the share
  of clips with IoU >= 0.5 on at least one of frames 0..9.
* **false-positive frame rate** (``--auto`` on needle-free clips): the share of frames reported visible.
"""
from __future__ import annotations

import numpy as np

from needletrack.eval.metrics import MetricAccumulator, frame_iou

WITHDRAW_LAG = 2
REENTRY_WINDOW = 5
REFOUND_IOU = 0.5
FOUND_WINDOW = 10


def _runs(flags: np.ndarray):
    """(start, end) half-open runs of True in a 1-D bool array."""
    f = np.concatenate([[False], np.asarray(flags, bool), [False]])
    d = np.diff(f.astype(np.int8))
    return list(zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]))


def episodes(gt_nonempty, pred_nonempty, ious) -> dict:
    """Withdrawal and re-entry episodes of one sequence. ``ious``: per-frame IoU (None where GT empty)."""
    gt = np.asarray(gt_nonempty, bool)
    pr = np.asarray(pred_nonempty, bool)
    out = {"withdrawals": 0, "withdrawals_reported": 0, "reentries": 0, "reentries_refound": 0}
    for a, b in _runs(~gt):
        if a == 0:                       # no needle before: not a withdrawal
            continue
        out["withdrawals"] += 1
        lag_end = min(b, a + WITHDRAW_LAG + 1)
        if (~pr[a:lag_end]).any():
            out["withdrawals_reported"] += 1
        if b < len(gt):                  # the needle comes back at frame b
            out["reentries"] += 1
            end = b
            while end < min(len(gt), b + REENTRY_WINDOW) and gt[end]:
                end += 1
            if any((ious[k] or 0.0) >= REFOUND_IOU for k in range(b, end)):
                out["reentries_refound"] += 1
    return out


class SetScore:
    """Accumulates one set (several sequences) of one run."""

    def __init__(self):
        self.acc = MetricAccumulator()
        self.ep = {"withdrawals": 0, "withdrawals_reported": 0, "reentries": 0, "reentries_refound": 0}
        self.sequences = 0
        self.found = []           # auto: found within 10 frames, per clip
        self.fp_frames = 0
        self.frames = 0

    def add_sequence(self, gt_masks, pred_masks, spacing=None, entry_side=None) -> list:
        """Score one sequence (frame 0 unscored); returns the per-frame IoU list (None where GT empty)."""
        acc = MetricAccumulator(pixel_spacing_mm=spacing, entry_side=entry_side)
        ious = []
        for i, (g, p) in enumerate(zip(gt_masks, pred_masks)):
            g = np.asarray(g, bool)
            p = np.asarray(p, bool)
            acc.update(p, g, first=(i == 0))
            ious.append(frame_iou(p, g) if g.any() else None)
        self.acc.merge(acc)
        gt_ne = [bool(np.any(g)) for g in gt_masks]
        pr_ne = [bool(np.any(p)) for p in pred_masks]
        e = episodes(gt_ne, pr_ne, ious)
        for k in self.ep:
            self.ep[k] += e[k]
        self.sequences += 1
        self.frames += len(gt_masks)
        return ious

    def add_auto_clip(self, gt_masks, pred_masks) -> None:
        """--auto on a needle clip: found within 10 frames?"""
        hit = any(np.asarray(g, bool).any() and frame_iou(np.asarray(p, bool), np.asarray(g, bool)) >= REFOUND_IOU
                  for g, p in list(zip(gt_masks, pred_masks))[:FOUND_WINDOW])
        self.found.append(bool(hit))

    def add_negative_clip(self, visible) -> None:
        v = np.asarray(visible, bool)
        self.fp_frames += int(v.sum())
        self.frames += len(v)
        self.sequences += 1

    def result(self) -> dict:
        r = {}
        if self.acc.frames:
            m = self.acc.result()
            r.update(iou=m["iou"], dice=m["dice"], empty_frame_accuracy=m["empty_frame_accuracy"],
                     tip_error_px=m["tip_error_px"], tip_error_mm=m["tip_error_mm"], scored_frames=m["frames"])
            e = self.ep
            r["withdrawals"] = e["withdrawals"]
            r["withdrawn_reported_2f"] = e["withdrawals_reported"] / e["withdrawals"] if e["withdrawals"] else None
            r["reentries"] = e["reentries"]
            r["reentry_refound_5f"] = e["reentries_refound"] / e["reentries"] if e["reentries"] else None
        if self.found:
            r["auto_found_10f"] = float(np.mean(self.found))
            r["auto_clips"] = len(self.found)
        if self.fp_frames or (self.frames and not self.acc.frames):
            r["fp_frame_rate"] = self.fp_frames / max(self.frames, 1)
        r["sequences"] = self.sequences
        return r


def drift(ious_per_seq, late: int = 300, early: int = 10, half: int = 2) -> dict | None:
    """Drift figures over still-needle sequences (see module doc); ``late`` is clipped to each sequence."""
    ratios, lates, earlies = [], [], []
    for ious in ious_per_seq:
        v = np.array([np.nan if x is None else x for x in ious], float)
        n = len(v)
        if n < early + half + 3:
            continue
        lt = min(late, n - 1 - half)
        ev, lw = v[early - half:early + half + 1], v[lt - half:lt + half + 1]
        if np.isnan(ev).all() or np.isnan(lw).all():       # no needle in view there: no drift figure
            continue
        e = np.nanmean(ev)
        lv = np.nanmean(lw)
        if not np.isfinite(e) or not np.isfinite(lv):
            continue
        earlies.append(e)
        lates.append(lv)
        ratios.append(lv / e if e > 0 else 0.0)
    if not ratios:
        return None
    return {"drift_ratio": float(np.mean(ratios)), "iou_late": float(np.mean(lates)),
            "iou_early": float(np.mean(earlies)), "late_frame": int(min(late, min(len(x) for x in ious_per_seq) - 1 - half)),
            "sequences": len(ratios)}
