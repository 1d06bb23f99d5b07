"""The streaming tracker: frame in, needle out, at constant cost per frame on endless streams.

    tracker = Tracker.from_pretrained("default")             # or a checkpoint path / .onnx file
    r = tracker.step(frame0, mask=first_mask)                # or first_line=(x0, y0, x1, y1), or auto=True
    r = tracker.step(frame1)                                 # r.mask, r.prob, r.visible, r.score, r.tip ...

Memory models (STNAN, STCN, ...) keep the first frame and a ring of recent memory frames (MemoryStore);
per-frame baselines (``is_memory_model == False``) segment each frame alone through the same interface.
A memory frame is written every ``mem_every`` frames, but only from a confident, non-empty prediction, so
frames where the needle has left the image (or a doubtful one) never overwrite what the needle looks like;
the first frame is never overwritten. When the needle comes back, the memory read finds it again.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from needletrack.errors import NeedletrackError
from needletrack.models.weights import read_header_metadata
from needletrack.track.engine import Letterbox, make_engine
from needletrack.track.frames import FrameNormaliser
from needletrack.track.kalman import TipTailKalman
from needletrack.track.memory import MemoryStore
from needletrack.track.segment import (MotionPrior, clipped, extend_along, extend_to_mask, fit_segment_scaled,
                                       image_support, segment_mask)


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
    source: str = "model"                  # "prompt" (first frame), "model", "search" (auto, nothing yet)
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
POLICIES = ("segment", "mask")


class Tracker:
    """Follow one needle through a stream of frames (see module doc)."""

    def __init__(self, model_or_engine, *, device: str = "cpu", input_size=None, mem_every: int = 5,
                 memory_slots: int | None = None, top_k="model", threshold: float = 0.5, min_area_px: int | None = None,
                 mem_min_score: float = 0.6, static_memory: bool | None = None, smooth: bool = True,
                 line_width: float | None = None, autoinit_cfg=None, min_score: float = 0.0,
                 policy: str = "segment", min_contrast: float = 0.25, min_length_frac: float = 0.03,
                 reacquire_frames: int = 8, max_turn_deg: float = 12.0, low_frac: float = 0.5,
                 mask_rule: str = "union", segment_min_score: float = 0.75, motion_prior: bool = True,
                 carry_lost: bool = True, coast_min_cnr: float | None = 4.0, max_coast: int = 3,
                 extend_min_cnr: float | None = 1.0, keep_prompt_width: bool = True,
                 mem_cap: int | None = None):
        if policy not in POLICIES:
            raise NeedletrackError(f"unknown tracker policy {policy!r} (choose one of {', '.join(POLICIES)})")
        self.policy = policy
        self.min_contrast = float(min_contrast)
        self.min_length_frac = float(min_length_frac)
        self.reacquire_frames = int(reacquire_frames)
        self.max_turn_deg = float(max_turn_deg)
        self.low_frac = float(low_frac)
        # the segment policy's score is the ridge (the best pixel across the line), higher than v1's mean over
        # the mask, so it has its own floor: 0.75, chosen on the harness's validation sets (docs/tracker.md)
        self.segment_min_score = float(segment_min_score)
        self.motion_prior = bool(motion_prior)
        # image support (docs/tracker.md): the carried segment is kept while the network is unsure but the image
        # still shows a line there (CNR >= coast_min_cnr, at most max_coast frames in a row), and a segment the
        # network has shortened keeps the carried extent where the image still shows it (>= extend_min_cnr).
        # None turns either off.
        self.coast_min_cnr = None if coast_min_cnr is None else float(coast_min_cnr)
        self.max_coast = int(max_coast)
        self.carry_lost = bool(carry_lost)
        self.keep_prompt_width = bool(keep_prompt_width)
        self.extend_min_cnr = None if extend_min_cnr is None else float(extend_min_cnr)
        self.mask_rule = mask_rule
        if hasattr(model_or_engine, "encode_key") and hasattr(model_or_engine, "segment") \
                and hasattr(model_or_engine, "read_memory") and hasattr(model_or_engine, "input_hw") \
                and not hasattr(model_or_engine, "parameters"):
            self.engine = model_or_engine          # an engine (TorchEngine / OnnxEngine)
        else:
            self.engine = make_engine(model_or_engine, device=device, engine="torch", input_size=input_size)
        self.is_memory_model = bool(self.engine.is_memory_model)
        # top-k in the memory read: the model's own setting (cfg.top_k) unless given; None = dense
        self.top_k = getattr(self.engine, "top_k_default", 20) if top_k == "model" else top_k
        self.threshold = float(threshold)
        self.min_area_px = min_area_px
        self.mem_min_score = float(mem_min_score)
        # a prediction counts as the needle only if its mean probability reaches min_score (else: not visible)
        self.min_score = float(min_score)
        # fixed-shape engines (ONNX) read all slots with the valid mask; torch reads the filled prefix
        self.static_memory = bool(getattr(self.engine, "static_memory", False)) if static_memory is None \
            else bool(static_memory)
        self.smooth = smooth
        self.line_width = line_width
        self.autoinit_cfg = autoinit_cfg
        # memory size, one name across the project: ``memory_slots`` = the first frame + the recent ring. A
        # fixed-shape engine (ONNX) fixes it; else 9 (the models' ``mem_frames`` default). ``mem_cap`` (the ring
        # alone, = memory_slots - 1) is the old spelling, still accepted.
        if memory_slots is None and mem_cap is not None:
            memory_slots = int(mem_cap) + 1
        if memory_slots is None:
            memory_slots = int(getattr(self.engine, "memory_slots", None) or 9)
        if int(memory_slots) < 2:
            raise NeedletrackError(f"memory_slots must be at least 2 (the first frame and one recent); got {memory_slots}")
        self.memory = MemoryStore(cap=int(memory_slots) - 1, every=mem_every)
        self.kalman = TipTailKalman()
        self.reset()

    @classmethod
    def from_pretrained(cls, name_or_path="default", device: str = "cpu", engine: str = "auto", **kwargs):
        """A tracker for a shipped model name (``weights/<name>.safetensors``), a checkpoint or an ONNX export.

        ``engine``: "auto" (ONNX Runtime on the CPU where it works, else PyTorch), "torch" or "onnx".
        ``log``: optional callable for the engine's messages (e.g. a first-use ONNX export)."""
        eng = make_engine(name_or_path, device=device, engine=engine, input_size=kwargs.pop("input_size", None),
                          log=kwargs.pop("log", None))
        for key, value in shipped_tracker_settings(name_or_path).items():
            kwargs.setdefault(key, value)
        return cls(eng, **kwargs)

    # ------------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the stream: the next step() needs a mask, a line or auto=True again."""
        self.memory.clear()
        self.kalman.reset()
        self.normaliser = FrameNormaliser()
        self.frame_index = 0
        self.frame_hw: tuple[int, int] | None = None
        self.letterbox: Letterbox | None = None
        self.initialised = False
        self.searching = False          # auto mode: looking for the needle, nothing found yet
        self.first_found: int | None = None
        self.entry_side: str | None = None
        self._prev = None               # previous frame's raw features (flow)
        self.confirmed = True           # False after an auto start, until a person prompts
        self._last_seg = None           # policy "segment": the last accepted segment (frame coordinates)
        self._pending = 0               # consecutive frames with a segment inconsistent with the last one
        self._consistent = False        # this frame's segment agrees with the last accepted one
        self._confirmer = None          # auto start: the same confident line over several frames
        self._motion = MotionPrior()    # carries the last segment with the tissue's frame-to-frame motion
        self._coasted = 0               # consecutive frames the carried segment was kept on image support alone
        self._carried = False           # this frame's output is the carried segment, not the network's
        self._prompt_width = None       # the needle's width in a person's prompt (px), drawn from then on

    @property
    def input_hw(self) -> tuple[int, int]:
        return tuple(self.engine.input_hw)

    # ------------------------------------------------------------------------------------------------------
    def step(self, frame, mask=None, first_line=None, auto: bool = False) -> TrackResult:
        i = self.frame_index
        where = f"frame {i}"
        img = self.normaliser(frame, where)
        hw = img.shape
        if self.frame_hw is None:
            self.frame_hw = hw
            self.letterbox = Letterbox(hw, self.input_hw)
        elif hw != self.frame_hw:
            raise NeedletrackError(f"frame {i} is {hw[1]}×{hw[0]} px but the stream started at "
                                   f"{self.frame_hw[1]}×{self.frame_hw[0]} px (call reset() for a new stream)")
        prompts = sum(x is not None for x in (mask, first_line)) + bool(auto)
        if prompts > 1:
            raise NeedletrackError("give only one of mask=, first_line= or auto=True")
        if self.initialised and prompts:
            raise NeedletrackError(f"{where}: a mask, line or auto prompt is only for the first frame "
                                   "(call reset() to start again)")
        if not self.initialised and not self.searching and not prompts:
            raise NeedletrackError("the first frame needs a prompt: mask=, first_line=(x0, y0, x1, y1) or auto=True")
        try:
            if not self.initialised:
                first = self._prompt_mask(frame, img, mask, first_line, auto, where)
                self.confirmed = not (auto or self.searching)
                if first is None:      # auto mode, nothing found (yet)
                    self.searching = True
                    res = self._finish(img, np.zeros(hw, np.float32), source="search")
                else:
                    res = self._start(img, first)
            else:
                res = self._track(img)
        except BaseException:
            if not self.initialised and not self.searching:   # a refused first frame: start afresh next call
                self.reset()
            raise
        self.frame_index += 1   # frames processed; a refused frame does not count
        return res

    # ------------------------------------------------------------------------------------------------------
    def _prompt_mask(self, frame, img, mask, first_line, auto, where):
        hw = img.shape
        if mask is not None:
            from needletrack.io.masks import binarize_mask, mask_warning

            m = np.asarray(mask)
            if m.ndim not in (2, 3) or m.shape[:2] != hw:
                size = f"{m.shape[1]}×{m.shape[0]} px" if m.ndim in (2, 3) else f"of shape {m.shape}"
                raise NeedletrackError(f"first mask is {size} but the frame is {hw[1]}×{hw[0]} px")
            mb = binarize_mask(m, "first mask")      # the one mask rule (needletrack.io.masks)
            if not mb.any():
                raise NeedletrackError("first mask is empty (no needle pixels): draw the needle, or use "
                                       "first_line= / auto=True")
            note = mask_warning(mb)
            if note:
                import warnings

                from needletrack.errors import NeedletrackWarning

                warnings.warn(f"first mask {note}; tracked as given", NeedletrackWarning, stacklevel=3)
            return mb
        if first_line is not None:
            from needletrack.geometry import line_mask
            from needletrack.track.autoinit import estimate_shaft_width

            try:
                x0, y0, x1, y1 = (float(v) for v in first_line)
            except (TypeError, ValueError):
                raise NeedletrackError(f"first_line must be four numbers x0, y0, x1, y1; got {first_line!r}") \
                    from None
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
                raise NeedletrackError("first_line has a NaN or inf coordinate")
            h, w = hw
            if not all(0 <= x <= w - 1 for x in (x0, x1)) or not all(0 <= y <= h - 1 for y in (y0, y1)):
                raise NeedletrackError(f"first_line ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the "
                                       f"{w}×{h} frame")
            if math.hypot(x1 - x0, y1 - y0) < 3:
                raise NeedletrackError("first_line is shorter than 3 px")
            width = self.line_width or estimate_shaft_width(img, (x0, y0), (x1, y1))
            return line_mask(hw, (x0, y0), (x1, y1), width)
        # auto (now or still searching): declines until the same confident line held for a few frames
        from needletrack.track.autoinit import StartConfirmer

        if self._confirmer is None:
            self._confirmer = StartConfirmer(self.autoinit_cfg)
        return self._confirmer.update(img)

    def _start(self, img: np.ndarray, mask_b: np.ndarray) -> TrackResult:
        i = self.frame_index
        lb = self.letterbox
        x = lb.forward(img)
        if self.is_memory_model:
            m_in = np.clip(lb.forward(mask_b.astype(np.float32)), 0.0, 1.0)
            q = self.engine.encode_key(x, prev=None)
            v = self.engine.encode_value(x, m_in, q)
            self.memory.allocate(self.engine, q.key, v)
            self.memory.set_first(q.key, v, i)
            self._prev = getattr(q, "raw16", None)
        self.initialised = True
        self.searching = False
        self.first_found = i
        return self._finish(img, mask_b.astype(np.float32), source="prompt", given_mask=mask_b)

    def _track(self, img: np.ndarray) -> TrackResult:
        i = self.frame_index
        x = self.letterbox.forward(img)
        if not self.is_memory_model:
            prob_in = self.engine.predict(x)
            return self._finish(img, self.letterbox.backward(prob_in), source="model")
        q = self.engine.encode_key(x, prev=self._prev)
        keys, vals, valid = self.memory.view(static=self.static_memory)
        r = self.engine.read_memory(keys, vals, q, valid=valid, top_k=self.top_k)
        prob_in = self.engine.segment(r, q)
        self._prev = getattr(q, "raw16", None)
        res = self._finish(img, self.letterbox.backward(prob_in), source="model")
        consistent = self._consistent if self.policy == "segment" else True
        if res.visible and res.score >= self.mem_min_score and consistent and self.memory.due(i):
            v = self.engine.encode_value(x, prob_in, q)
            self.memory.add(q.key, v, i)
        res.memory_frames = self.memory.frames
        return res

    # ------------------------------------------------------------------------------------------------------
    def _finish(self, img, prob: np.ndarray, source: str, given_mask=None) -> TrackResult:
        from needletrack.geometry import needle_from_mask

        i = self.frame_index
        prob = np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0)
        seg = None
        if given_mask is not None:
            mask = given_mask
            visible = bool(mask.any())
            score = float(prob[mask].mean()) if visible else 0.0
            if self.policy == "segment" and visible:
                self._last_seg = fit_segment_scaled(mask.astype(np.float32), None, 0.5, 0.5)
                # a person's prompt shows the needle's full width (its outer diameter, which does not change);
                # the network's ridge is often narrower (the echo is the front wall), so the prompt's width is
                # kept for the segment drawn in later frames. An auto start measures the image instead.
                if self.keep_prompt_width and self.confirmed and self._last_seg is not None:
                    self._prompt_width = self._last_seg.width
                if self.motion_prior:
                    self._motion.carry(img, None)      # keep the prompt frame for the next frame's motion
        elif self.policy == "segment" and source != "search":
            mask, score, visible, seg = self._segment_decision(prob, img)
            if self._carried:
                source = "carried"
        else:
            mask, score, visible = gate_prediction(prob, self.threshold, self.min_score, self.min_area_px)
        area = int(mask.sum()) if visible else 0
        if not visible:
            mask = np.zeros_like(mask, dtype=bool)
            score = 0.0
        geo = needle_from_mask(mask, entry_side=self.entry_side) if visible else None
        if geo is not None and self.entry_side is None:
            self.entry_side = geo.entry_side
        raw_tip = geo.tip if geo else None
        raw_tail = geo.tail if geo else None
        if seg is not None and visible:        # policy "segment": the ends of the fitted segment
            raw_tail, raw_tip = seg.ends_by_entry(self.entry_side)
        if self.smooth and geo is not None and source != "search":
            tip, tail = self.kalman.update(raw_tip, raw_tail)
        elif self.smooth and source != "search":
            self.kalman.predict()          # keep the motion model running through gaps
            tip = tail = None
        else:
            tip, tail = raw_tip, raw_tail
        angle = path = None
        if tip is not None:
            h, w = self.frame_hw
            tip = (min(max(tip[0], 0.0), w - 1.0), min(max(tip[1], 0.0), h - 1.0))
            tail = (min(max(tail[0], 0.0), w - 1.0), min(max(tail[1], 0.0), h - 1.0))
            dx, dy = tip[0] - tail[0], tip[1] - tail[1]
            angle = math.degrees(math.atan2(dy, abs(dx))) if (dx or dy) else (geo.angle_deg if geo else 0.0)
            path = predicted_path(tip, tail, self.frame_hw)
        return TrackResult(frame_index=i, mask=mask, prob=prob, visible=visible, score=score, tip=tip, tail=tail,
                           angle_deg=angle, path=path, raw_tip=raw_tip, raw_tail=raw_tail, area_px=area,
                           source=source, memory_frames=self.memory.frames, confirmed=self.confirmed,
                           segment_contrast=seg.contrast if seg is not None else None)

    def _segment_decision(self, prob: np.ndarray, img: np.ndarray | None = None):
        """Policy "segment" (tracker v2, docs/tracker.md): fit the needle segment with the last accepted one,
        carried by the motion prior, as its prior; decide presence from its length, ridge score and contrast, and
        keep it consistent over time.

        * visible needs: length >= ``min_length_frac`` of the frame diagonal, core ridge probability >=
          max(``min_score``, ``segment_min_score``) and ridge contrast against the bands beside it >=
          ``min_contrast``;
        * a segment turned > ``max_turn_deg`` from the last accepted one, or shifted off its line by more than
          max(4 widths, 6 % of the diagonal), is a jump: it is reported only once it has held for
          ``reacquire_frames`` consecutive frames (a phantom on a tissue line rarely does; a real needle does);
        * the mask follows ``mask_rule`` (:func:`needletrack.track.segment.segment_mask`); with ``union`` the
          segment's ends are then moved out to the mask's extent, and that segment is the next frame's prior."""
        h, w = prob.shape
        diag = math.hypot(h, w)
        prior = self._last_seg
        if self.motion_prior and img is not None:
            prior = self._motion.carry(img, prior)
            if self.carry_lost:
                self._last_seg = prior     # the needle's path moves with the tissue, seen or not
        seg = fit_segment_scaled(prob, prior, self.threshold, self.low_frac * self.threshold, self.max_turn_deg)
        self._consistent = False
        self._carried = False
        if seg is None or seg.length < self.min_length_frac * diag \
                or seg.score < max(self.min_score, self.segment_min_score) \
                or seg.contrast < self.min_contrast:
            self._pending = 0
            return self._coast(prob, img, prior)
        last = self._last_seg
        jump = False
        if last is not None:
            jump = seg.angle_to(last) > self.max_turn_deg or \
                seg.offset_to(last) > max(4.0 * max(seg.width, last.width), 0.06 * diag)
            if jump:
                self._pending += 1
                if self._pending < self.reacquire_frames:
                    return self._coast(prob, img, prior)
            self._consistent = not jump
        self._pending = 0
        self._coasted = 0
        if not jump and prior is not None and img is not None and self.extend_min_cnr is not None:
            seg = self._extend_supported(seg, prior, img)
        if self._prompt_width is not None:
            seg = dataclasses.replace(seg, width=max(seg.width, self._prompt_width))
        net = prob >= self.threshold
        mask = segment_mask((h, w), seg, net, rule=self.mask_rule)
        if self.mask_rule == "union":        # out to the network's pieces kept, not the drawn line's round caps
            seg = extend_to_mask(seg, mask & net)
        self._last_seg = seg
        return mask, seg.score, True, seg

    def _coast(self, prob, img, prior):
        """The network shows no acceptable segment: keep the carried one while the image itself still shows a
        line along it (at most ``max_coast`` frames in a row), else report nothing. The network's score is kept
        (the mean probability inside the carried mask), so a low score says who decided."""
        empty = np.zeros(prob.shape, bool)
        if self.coast_min_cnr is None or prior is None or img is None or self._coasted >= self.max_coast \
                or image_support(img, prior.p0, prior.p1, prior.width) < self.coast_min_cnr:
            return empty, 0.0, False, None
        from needletrack.geometry import line_mask

        self._coasted += 1
        self._carried = True
        mask = line_mask(prob.shape, prior.p0, prior.p1, prior.width)
        self._last_seg = prior
        score = float(prob[mask].mean()) if mask.any() else 0.0
        return mask, score, bool(mask.any()), prior

    def _extend_supported(self, seg, prior, img):
        """``seg`` lengthened to the carried segment's extent at either end, for each end whose added part the
        image still shows (>= ``extend_min_cnr``): the network losing a dim distal part does not shrink the
        needle, and a needle drawn back (no line left there) is not extended."""
        ext = extend_along(seg, prior)
        p0 = np.asarray(seg.p0, float)
        d = seg.direction
        lo = float((np.asarray(ext.p0, float) - p0) @ d)
        hi = lo + ext.length
        new_lo, new_hi = 0.0, seg.length
        if lo < -3.0 and image_support(img, *_ends(clipped(seg, lo, 0.0)), seg.width) >= self.extend_min_cnr:
            new_lo = lo
        if hi > seg.length + 3.0 and \
                image_support(img, *_ends(clipped(seg, seg.length, hi)), seg.width) >= self.extend_min_cnr:
            new_hi = hi
        return seg if (new_lo, new_hi) == (0.0, seg.length) else clipped(seg, new_lo, new_hi)


def _ends(seg):
    return seg.p0, seg.p1


def gate_prediction(prob: np.ndarray, threshold: float, min_score: float = 0.0,
                    min_area_px: int | None = None) -> tuple[np.ndarray, float, bool]:
    """The tracker's rule from a probability map to a needle mask: pixels at or above ``threshold``; the
    needle counts as visible when that mask covers at least ``min_area_px`` (default: 2e-4 of the frame, at
    least 4 px) and its mean probability (the score) reaches ``min_score``. Returns (mask, score, visible);
    the caller empties the mask when not visible."""
    mask = prob >= threshold
    floor = int(min_area_px) if min_area_px is not None else max(4, int(round(2e-4 * prob.size)))
    visible = int(mask.sum()) >= floor
    score = float(prob[mask].mean(dtype=np.float32)) if visible else 0.0
    return mask, score, visible and score >= min_score


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


# Tracker settings a weights file may carry (its metadata "tracker" entry), tuned on a validation split.
TRACKER_SETTINGS = ("threshold", "min_score", "min_area_px", "mem_min_score", "segment_min_score")


def shipped_tracker_settings(name_or_path) -> dict:
    """The tracker settings stored with a .safetensors model (``{}`` for other inputs or none stored).

    Reads only the file's JSON header (no torch import, so the ONNX path stays light)."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        return {}
    s = os.fspath(name_or_path)
    if s.endswith(".safetensors") or os.sep in s or os.path.exists(s):
        path = s
    else:
        from needletrack.models.weights import weights_dir

        path = os.path.join(weights_dir(), f"{s}.safetensors")
    try:
        meta = json.loads(read_header_metadata(path).get("needletrack_meta", "{}"))
    except (NeedletrackError, ValueError):
        return {}
    settings = meta.get("tracker") or {} if isinstance(meta, dict) else {}
    return {k: settings[k] for k in TRACKER_SETTINGS if k in settings}
