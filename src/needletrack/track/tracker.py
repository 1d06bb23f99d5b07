"""The streaming tracker: frame in, needle out, at constant cost per frame on endless streams.

    tracker = Tracker.from_pretrained("default")             # or a checkpoint path / .onnx file
    r = tracker.step(frame0, mask=first_mask)                # or first_line=(x0, y0, x1, y1), or auto=True
    r = tracker.step(frame1)                                 # r.mask, r.prob, r.visible, r.score, r.tip ...

Memory models (STNAN, STCN, ...) keep the first frame and a ring of recent memory frames (MemoryStore);
per-frame baselines (``is_memory_model == False``) segment each frame alone through the same interface.
A memory frame is written every ``mem_every`` frames, but only from a confident, non-empty prediction, so
frames where the needle has left the image (or a doubtful one) never overwrite what the needle looks like;
the first frame is never overwritten. When the needle comes back, the memory read finds it again.

What the tracker decides from each probability map (policy "segment", tracker v2) is
:class:`needletrack.track.policy.SegmentPolicy`; what it reports is :class:`needletrack.track.result.TrackResult`;
an unprompted start is :class:`needletrack.track.autostart.StartConfirmer`.
"""
from __future__ import annotations

import json
import math
import os
from typing import NamedTuple

import numpy as np

from needletrack.errors import NeedletrackError
from needletrack.models.weights import read_header_metadata
from needletrack.track.engine import Letterbox, make_engine
from needletrack.track.frames import FrameNormaliser
from needletrack.track.kalman import TipTailKalman
from needletrack.track.memory import MemoryStore
from needletrack.track.policy import SegmentPolicy, SegmentSettings
from needletrack.track.result import CSV_DECIMALS, CSV_HEADER, TrackResult, predicted_path  # noqa: F401 (re-exported)


POLICIES = ("segment", "mask")


class Decision(NamedTuple):
    """One frame's needle as the output policy decided it (before geometry and the tip/tail filter)."""

    mask: np.ndarray
    score: float
    visible: bool
    seg: object          # the fitted Segment (policy "segment") or None
    source: str


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
                 search_again_after: int | None = 10, mem_cap: int | None = None, detector="detector",
                 redetect: bool = False, redetect_frames: int = 2, redetect_min_score: float = 0.95,
                 redetect_min_length_frac: float = 0.1, redetect_max_edge_frac: float | None = 0.1,
                 redetect_memory: bool = True):
        if policy not in POLICIES:
            raise NeedletrackError(f"unknown tracker policy {policy!r} (choose one of {', '.join(POLICIES)})")
        self.policy = policy
        # the segment policy's settings and state live in one place (needletrack.track.policy); the ridge score
        # has its own floor, segment_min_score 0.75, chosen on the harness's validation sets (docs/tracker.md)
        self.segment_settings = SegmentSettings(
            threshold=float(threshold), min_score=float(min_score), segment_min_score=float(segment_min_score),
            min_contrast=float(min_contrast), min_length_frac=float(min_length_frac),
            reacquire_frames=int(reacquire_frames), max_turn_deg=float(max_turn_deg), low_frac=float(low_frac),
            mask_rule=mask_rule, motion_prior=bool(motion_prior), carry_lost=bool(carry_lost),
            coast_min_cnr=None if coast_min_cnr is None else float(coast_min_cnr), max_coast=int(max_coast),
            extend_min_cnr=None if extend_min_cnr is None else float(extend_min_cnr),
            keep_prompt_width=bool(keep_prompt_width))
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
        # an auto start that no person confirmed and that has shown nothing for this many frames in a row goes
        # back to searching (a needle withdrawn and put in elsewhere is looked for again); None: never
        if search_again_after is not None and int(search_again_after) < 1:
            raise NeedletrackError(f"search_again_after must be at least 1 frame or None; got {search_again_after}")
        self.search_again_after = None if search_again_after is None else int(search_again_after)
        # memory size, one name across the project: ``memory_slots`` = the first frame + the recent ring. A
        # fixed-shape engine (ONNX) fixes it; else 9 (the models' ``mem_frames`` default). ``mem_cap`` (the ring
        # alone, = memory_slots - 1) is the old spelling, still accepted.
        if memory_slots is None and mem_cap is not None:
            memory_slots = int(mem_cap) + 1
        if memory_slots is None:
            memory_slots = int(getattr(self.engine, "memory_slots", None) or 9)
        if int(memory_slots) < 2:
            raise NeedletrackError(f"memory_slots must be at least 2 (the first frame and one recent); got {memory_slots}")
        self.memory = MemoryStore(memory_slots=int(memory_slots), every=mem_every)
        # the learned single-frame detector (needletrack.track.detector): a shipped name or path (loaded on first
        # use; none where its weights are absent), a LearnedDetector, or None (off). It runs only on frames without
        # a needle: the auto start's learned rule, and, off by default (it re-found no more needles on validation
        # and cost empty-frame accuracy), re-detection of a needle that came back (``redetect``: the
        # same segment in ``redetect_frames`` frames at ridge probability >= ``redetect_min_score``, at least
        # ``redetect_min_length_frac`` of the diagonal long, coming in from the imaged region's border
        # (``redetect_max_edge_frac``, None: anywhere); with ``redetect_memory`` that frame is written to memory, so
        # the network follows the needle again)
        self._detector_spec = detector
        self._detector_obj = None
        self.redetect = bool(redetect)
        self.redetect_frames = int(redetect_frames)
        self.redetect_min_score = float(redetect_min_score)
        self.redetect_min_length_frac = float(redetect_min_length_frac)
        self.redetect_max_edge_frac = None if redetect_max_edge_frac is None else float(redetect_max_edge_frac)
        self.redetect_memory = bool(redetect_memory)
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
        self.normaliser = FrameNormaliser()
        self.frame_index = 0
        self.frame_hw: tuple[int, int] | None = None
        self.letterbox: Letterbox | None = None
        self.searching = False          # auto mode: looking for the needle, nothing found yet
        self.first_found: int | None = None
        self.confirmed = True           # False after an auto start, until a person prompts
        self._last_img = None           # the previous frame (the learned detector sees the change since it)
        self.started_by: str | None = None   # the rule of the last auto start: "seen", "pushed in" or "held"
        self._forget_needle()

    def _forget_needle(self) -> None:
        """Forget the needle (memory, motion, segment, start rule), keeping the stream's frame size and count."""
        self.memory.clear()
        self.kalman.reset()
        self.initialised = False
        self.entry_side: str | None = None
        self._prev = None               # previous frame's raw features (flow)
        self._confirmer = None          # auto start: the same confident line over several frames
        self._unseen = 0                # frames in a row with no needle since the last visible one
        from needletrack.track.detector import HeldSegments

        self._redetected = HeldSegments(self.redetect_frames, 6.0, 0.015)   # re-detection: the same line held
        self.segment_policy = SegmentPolicy(self.segment_settings)   # policy "segment": its state

    def detector(self):
        """The learned detector, loaded on first use (None: off, or no weights)."""
        spec = self._detector_spec
        if spec is None or spec is False:
            return None
        if self._detector_obj is None:
            from needletrack.track.detector import LearnedDetector

            if isinstance(spec, LearnedDetector):
                self._detector_obj = spec
            elif LearnedDetector.available(spec):
                self._detector_obj = LearnedDetector.from_pretrained(spec)
            else:
                self._detector_spec = None     # no weights: the training-free rules alone
                return None
        return self._detector_obj

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
                self._unseen = 0 if res.visible else self._unseen + 1
                if not self.confirmed and self.search_again_after is not None \
                        and self._unseen >= self.search_again_after:
                    self._search_again()
        except BaseException:
            if not self.initialised and not self.searching:   # a refused first frame: start afresh next call
                self.reset()
            raise
        self.frame_index += 1   # frames processed; a refused frame does not count
        self._last_img = img
        return res

    def _search_again(self) -> None:
        """Back to the auto start's search: the unconfirmed needle has been gone for ``search_again_after``
        frames."""
        self._forget_needle()
        self.searching = True

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
            from needletrack.track.autostart import estimate_shaft_width

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
        from needletrack.track.autostart import StartConfirmer

        if self._confirmer is None:
            from needletrack.track.autoinit import AutoInitConfig

            cfg = self.autoinit_cfg or AutoInitConfig()
            self._confirmer = StartConfirmer(cfg, detector=self.detector() if cfg.learned_start else None)
        found = self._confirmer.update(img)
        if found is not None:
            self.started_by = self._confirmer.started_by
        return found

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
        prob = _as_prob(self.letterbox.backward(prob_in))
        decision = self._decide(img, prob, source="model")
        if not decision.visible and self.redetect and self.policy == "segment":
            found = self._redetect(img)
            if found is not None:
                det_mask, det_score = found
                # one decision per frame: the Kalman filter of the tip and tail steps once
                decision = self._decide(img, prob, source="detector", given_mask=det_mask)
                res = self._result(img, prob, *decision)
                res.score = det_score
                # written on the first frame found again (the network then follows it), then as memory is due
                if self.redetect_memory and (self.memory.due(i) or self._unseen > 0):
                    m_in = np.clip(self.letterbox.forward(det_mask.astype(np.float32)), 0.0, 1.0)
                    self.memory.add(q.key, self.engine.encode_value(x, m_in, q), i)
                res.memory_frames = self.memory.frames
                return res
        elif self.redetect:
            self._redetected.clear()
        res = self._result(img, prob, *decision)
        consistent = self.segment_policy.consistent if self.policy == "segment" else True
        if res.visible and res.score >= self.mem_min_score and consistent and self.memory.due(i):
            v = self.engine.encode_value(x, prob_in, q)
            self.memory.add(q.key, v, i)
        res.memory_frames = self.memory.frames
        return res

    def _redetect(self, img: np.ndarray):
        """A frame without a needle: the learned detector's segment, once held (``redetect_frames``), becomes
        this frame's needle and the segment policy's last one. Returns (mask, ridge score) or None."""
        det = self.detector()
        if det is None:
            return None
        seg, dprob = det.find(img, prev=self._last_img, min_score=self.redetect_min_score,
                              min_length_frac=self.redetect_min_length_frac, max_edge_frac=self.redetect_max_edge_frac)
        if not self._redetected.update(seg, math.hypot(*img.shape)):
            return None
        mask = det.mask(img.shape, seg, dprob)
        if not mask.any():
            return None
        self.segment_policy.restart(img, mask)
        return mask, float(seg.score)

    # ------------------------------------------------------------------------------------------------------
    def _finish(self, img, prob: np.ndarray, source: str, given_mask=None) -> TrackResult:
        prob = _as_prob(prob)
        return self._result(img, prob, *self._decide(img, prob, source, given_mask))

    def _decide(self, img, prob: np.ndarray, source: str, given_mask=None):
        """This frame's needle from its probability map (clipped to [0, 1]) or a given mask, as a
        :class:`Decision`; the policy's state moves on, the tip/tail filter does not. ``prob``:
        float32 in [0, 1] (:func:`_as_prob`)."""
        seg = None
        if given_mask is not None:
            mask = given_mask
            visible = bool(mask.any())
            score = float(prob[mask].mean()) if visible else 0.0
            if self.policy == "segment" and visible and source == "prompt":
                self.segment_policy.start(img, mask, from_person=self.confirmed)
        elif self.policy == "segment" and source != "search":
            mask, score, visible, seg = self.segment_policy.decide(prob, img)
            if self.segment_policy.carried:
                source = "carried"
        else:
            mask, score, visible = gate_prediction(prob, self.threshold, self.min_score, self.min_area_px)
        return Decision(mask, score, visible, seg, source)

    def _result(self, img, prob: np.ndarray, mask, score, visible, seg, source) -> TrackResult:
        """The frame's result from its decision (:meth:`_decide`): geometry, the tip/tail filter's one step,
        the predicted path."""
        from needletrack.geometry import needle_from_mask

        i = self.frame_index
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


def _as_prob(prob) -> np.ndarray:
    """A probability map as the output policy reads it: float32, clipped to [0, 1]."""
    return np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0)


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
