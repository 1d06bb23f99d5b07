"""Tracker v2's output policy, ``policy="segment"``: from the network's probability map to one needle segment,
with the state it keeps between frames (docs/tracker.md, steps 2-8).

The :class:`~needletrack.track.tracker.Tracker` runs the model (encoders, memory, decoder) and owns the stream;
this class owns what the tracker decides from each probability map: the last accepted segment and the tissue
motion that carries it, the jump hold, the carried extent and short dropouts on image support, and the
prompt's width. It needs no model, so it is tested with probability maps alone.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from needletrack.geometry import line_mask
from needletrack.track.segment import (MASK_RULES, MotionPrior, Segment, clipped, extend_to_mask,
                                       fit_segment_scaled, image_support, segment_mask, span_along)


@dataclasses.dataclass
class SegmentSettings:
    """The segment policy's settings (the Tracker's keyword arguments of the same names; docs/tracker.md)."""

    threshold: float = 0.5            # network mask: probability >= threshold
    min_score: float = 0.0            # the v1 score floor, also applied to the ridge score
    segment_min_score: float = 0.75   # ridge probability floor (chosen on validation)
    min_contrast: float = 0.25        # ridge minus the bands beside it
    min_length_frac: float = 0.03     # of the frame diagonal
    reacquire_frames: int = 8         # a jump is reported once it held this many frames
    max_turn_deg: float = 12.0
    low_frac: float = 0.5             # fit candidates: probability >= low_frac × threshold
    mask_rule: str = "union"
    motion_prior: bool = True         # carry the last segment with the tissue's motion (LK)
    carry_lost: bool = True           # ... also while the needle is not seen
    coast_min_cnr: float | None = 4.0  # short dropouts: image CNR along the carried segment (None: off)
    max_coast: int = 3
    extend_min_cnr: float | None = 1.0  # no shrinking: image CNR along the carried extent (None: off)
    keep_prompt_width: bool = True    # draw at least the width of a person's prompt

    def __post_init__(self):
        if self.mask_rule not in MASK_RULES:
            raise ValueError(f"mask rule must be one of {MASK_RULES}, got {self.mask_rule!r}")


class SegmentPolicy:
    """``start`` on the prompt frame, then ``decide`` on every tracked frame (module doc)."""

    def __init__(self, settings: SegmentSettings | None = None):
        self.s = settings or SegmentSettings()
        self.reset()

    def reset(self) -> None:
        self.last: Segment | None = None      # the last accepted segment (frame coordinates)
        self.pending = 0                      # consecutive frames with a segment that jumped from the last one
        self.consistent = False               # this frame's segment agrees with the last accepted one
        self.carried = False                  # this frame's output is the carried segment, not the network's
        self.coasted = 0                      # consecutive frames carried on image support alone
        self.prompt_width: float | None = None
        self.motion = MotionPrior()

    def start(self, img: np.ndarray, mask: np.ndarray, from_person: bool) -> None:
        """The prompt frame: its mask is the first accepted segment. A person's prompt shows the needle's full
        width (its outer diameter, which does not change), while the network's ridge is often narrower (the echo
        is the front wall), so that width is kept for the segments of later frames; an auto start is not."""
        self.restart(img, mask)
        if self.s.keep_prompt_width and from_person and self.last is not None:
            self.prompt_width = self.last.width

    def restart(self, img: np.ndarray, mask: np.ndarray) -> None:
        """The mask's segment becomes the last accepted one (the prompt frame, or a needle found again by the
        tracker's learned re-detection, which keeps the width of a person's prompt: a needle's outer diameter
        does not change)."""
        self.last = fit_segment_scaled(mask.astype(np.float32), None, 0.5, 0.5)
        self.pending = 0
        self.coasted = 0
        self.consistent = False
        if self.s.motion_prior:
            self.motion.carry(img, None)      # keep this frame for the next frame's motion

    def decide(self, prob: np.ndarray, img: np.ndarray | None = None):
        """(mask, score, visible, segment) for one frame's probability map.

        * visible needs: length >= ``min_length_frac`` of the frame diagonal, core ridge probability >=
          max(``min_score``, ``segment_min_score``) and ridge contrast >= ``min_contrast``;
        * a segment turned > ``max_turn_deg`` from the carried last one, or shifted off its line by more than
          max(4 widths, 6 % of the diagonal), is a jump: it is reported only once it held for
          ``reacquire_frames`` consecutive frames;
        * without an acceptable segment, the carried one is reported for at most ``max_coast`` frames while the
          image shows it clearly (:meth:`_coast`);
        * an accepted segment keeps the carried extent where the image still shows it (:meth:`_extend`), is at
          least as wide as a person's prompt, and the mask follows ``mask_rule``
          (:func:`needletrack.track.segment.segment_mask`); with ``union`` the segment's ends then move out to
          the network pieces kept, and that segment is the next frame's prior."""
        s = self.s
        h, w = prob.shape
        diag = math.hypot(h, w)
        prior = self.last
        if s.motion_prior and img is not None:
            prior = self.motion.carry(img, prior)
            if s.carry_lost:
                self.last = prior          # the needle's path moves with the tissue, seen or not
        seg = fit_segment_scaled(prob, prior, s.threshold, s.low_frac * s.threshold, s.max_turn_deg)
        self.consistent = False
        self.carried = False
        if seg is None or seg.length < s.min_length_frac * diag \
                or seg.score < max(s.min_score, s.segment_min_score) or seg.contrast < s.min_contrast:
            self.pending = 0
            return self._coast(prob, img, prior)
        last = self.last
        jump = False
        if last is not None:
            jump = seg.angle_to(last) > s.max_turn_deg or \
                seg.offset_to(last) > max(4.0 * max(seg.width, last.width), 0.06 * diag)
            if jump:
                self.pending += 1
                if self.pending < s.reacquire_frames:
                    return self._coast(prob, img, prior)
            self.consistent = not jump
        self.pending = 0
        self.coasted = 0
        if not jump and prior is not None and img is not None and s.extend_min_cnr is not None:
            seg = self._extend(seg, prior, img)
        if self.prompt_width is not None:
            seg = dataclasses.replace(seg, width=max(seg.width, self.prompt_width))
        net = prob >= s.threshold
        mask = segment_mask((h, w), seg, net, rule=s.mask_rule)
        if s.mask_rule == "union":        # out to the network's pieces kept, not the drawn line's round caps
            seg = extend_to_mask(seg, mask & net)
        self.last = seg
        return mask, seg.score, True, seg

    def _coast(self, prob, img, prior):
        """No acceptable segment: keep the carried one while the image itself still shows a line along it (at
        most ``max_coast`` frames in a row), else report nothing. The network's score is kept (the mean
        probability inside the carried mask), so a low score says who decided."""
        s = self.s
        empty = np.zeros(prob.shape, bool)
        if s.coast_min_cnr is None or prior is None or img is None or self.coasted >= s.max_coast \
                or image_support(img, prior.p0, prior.p1, prior.width) < s.coast_min_cnr:
            return empty, 0.0, False, None
        self.coasted += 1
        self.carried = True
        mask = line_mask(prob.shape, prior.p0, prior.p1, prior.width)
        self.last = prior
        score = float(prob[mask].mean()) if mask.any() else 0.0
        return mask, score, bool(mask.any()), prior

    def _extend(self, seg, prior, img):
        """``seg`` lengthened to the carried segment's extent at either end, for each end whose added part the
        image still shows (>= ``extend_min_cnr``): the network losing a dim distal part does not shrink the
        needle, and a needle drawn back (no line left there) is not extended."""
        lo, hi = span_along(seg, prior)
        new_lo, new_hi = 0.0, seg.length
        if lo < -3.0 and self._shows(img, clipped(seg, lo, 0.0)):
            new_lo = lo
        if hi > seg.length + 3.0 and self._shows(img, clipped(seg, seg.length, hi)):
            new_hi = hi
        return seg if (new_lo, new_hi) == (0.0, seg.length) else clipped(seg, new_lo, new_hi)

    def _shows(self, img, part: Segment) -> bool:
        return image_support(img, part.p0, part.p1, part.width) >= self.s.extend_min_cnr
