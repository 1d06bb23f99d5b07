"""Starting a track: the rules by which an unprompted start (``auto=True``) declines rather than guesses, and
the shaft width of a line prompt. The training-free detector is :mod:`needletrack.track.autoinit`, the learned
one :mod:`needletrack.track.detector`.

:class:`StartConfirmer` takes a line once a rule holds (``AutoInitConfig``; chosen on the harness's validation
sets, docs/tracker.md). Where the learned detector is loaded (the shipped ``weights/detector.safetensors``):

* **seen** (``learned_start``): the learned detector finds the same segment in ``learned_frames`` consecutive
  frames, each with ridge probability >= ``learned_min_score``, long enough, coming in from the imaged region's
  border;

and the two training-free rules below only with ``training_free_with_learned``. Without the detector (no weights,
or ``Tracker(detector=None)``):

* **held** (``held_start``, off by default): the training-free detector found the same confident line
  (CNR >= ``start_min_cnr``) in ``confirm_frames`` consecutive frames;
* **pushed in** (``motion_start``): a fainter line, coming in from the image's edge, followed over
  ``motion_frames`` frames, whose shaft moves along its own axis towards its tip relative to the tissue
  beside it (dense Farneback flow between consecutive frames), and which itself moves that way in the image.
  An inserted needle does; tissue lines move with the tissue (probe motion, breathing), a still image does not
  move at all, and a line fixed in the image (burned-in text, an overlay) does not move itself.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from needletrack.geometry import line_angle_deg, line_mask, midpoint_offset, shallow_first
from needletrack.track.autoinit import (AutoInitConfig, NeedleLine, _accept, _candidates, _sample, _work_image,
                                        line_of, profile_stats)
from needletrack.track.frames import to_float01


def _agree(a0, a1, b0, b1, max_deg: float, max_offset: float) -> bool:
    ang = line_angle_deg(a0, a1, b0, b1)
    return ang is not None and ang <= max_deg and midpoint_offset(a0, a1, b0, b1) <= max_offset


def lines_agree(a: NeedleLine, b: NeedleLine, max_deg: float, max_offset: float) -> bool:
    """Same line: orientations within ``max_deg`` and a's midpoint within ``max_offset`` px of b's line."""
    return _agree(a.p0, a.p1, b.p0, b.p1, max_deg, max_offset)


def loose_config(cfg: AutoInitConfig) -> AutoInitConfig:
    """The detector's settings for the candidates that the pushed-in rule follows."""
    return dataclasses.replace(cfg, min_cnr=cfg.motion_min_cnr, min_bright_rank=cfg.motion_min_bright_rank,
                               angle_range=(cfg.motion_min_angle, cfg.angle_range[1]),
                               min_length_frac=cfg.motion_min_length_frac, min_coverage=cfg.motion_min_coverage)


def axial_flow(flow: np.ndarray, cand: dict, diag: float) -> tuple[float, float]:
    """Mean flow along the candidate's axis (towards its deeper end) on the deeper 70 % of its shaft: that
    minus the same in bands 1.3-1.9 % of the diagonal to either side (how far the shaft moved along itself,
    relative to the tissue beside it), and the shaft's own (work pixels)."""
    p0, p1 = np.asarray(cand["p0"], float), np.asarray(cand["p1"], float)
    tail, tip = shallow_first(p0, p1)
    length = float(np.hypot(*(tip - tail)))
    if length < 2.0:
        return 0.0, 0.0
    u = (tip - tail) / length
    nrm = np.array([-u[1], u[0]])
    ts = np.linspace(0.3 * length, length, 24)
    offs = np.array([0.0, -0.019, -0.0126, 0.0126, 0.019]) * diag
    p = tail[None, None, :] + ts[None, :, None] * u[None, None, :] + offs[:, None, None] * nrm[None, None, :]
    fx = _sample(flow[..., 0], p[..., 0], p[..., 1]).reshape(len(offs), -1)
    fy = _sample(flow[..., 1], p[..., 0], p[..., 1]).reshape(len(offs), -1)
    along = (fx * u[0] + fy * u[1]).mean(axis=1)
    return float(along[0] - along[1:].mean()), float(along[0])


class StartConfirmer:
    """Auto start that declines rather than guesses (see the module's docstring): ``update(frame) -> mask |
    None``; a mask only once one of the rules holds. ``started_by``: "seen", "held" or "pushed in"."""

    def __init__(self, cfg: AutoInitConfig | None = None, detector=None):
        from needletrack.track.detector import HeldSegments

        self.cfg = cfg or AutoInitConfig()
        # the learned rule ("seen"): a LearnedDetector, or None (no weights, or learned_start off)
        self.detector = detector if self.cfg.learned_start else None
        self._seen = HeldSegments(self.cfg.learned_frames, self.cfg.confirm_deg, self.cfg.confirm_offset_frac)
        self._prev_img = None        # the previous frame (the detector sees the change since it)
        self.history: list[NeedleLine | None] = []
        self.started_by: str | None = None
        self._prev = None            # previous work image (flow)
        self._tracks: list[dict] = []  # pushed-in rule: candidates followed from frame to frame
        self._n = 0

    def update(self, frame) -> np.ndarray | None:
        cfg = self.cfg
        h, w = np.asarray(frame).shape[:2]
        if self.detector is not None:
            img = to_float01(frame, "frame")
            seg, prob = self.detector.find(img, prev=self._prev_img, min_score=cfg.learned_min_score,
                                           min_length_frac=cfg.learned_min_length_frac,
                                           max_edge_frac=cfg.learned_max_edge_frac)
            self._prev_img = img
            if self._seen.update(seg, math.hypot(h, w)):
                m = self.detector.mask((h, w), seg, prob)
                if m.any():
                    self.started_by = "seen"
                    return m
        if not (cfg.held_start or cfg.motion_start) or (self.detector is not None
                                                        and not cfg.training_free_with_learned):
            return None
        _img, small, f = _work_image(frame, cfg)
        loose = loose_config(cfg) if cfg.motion_start else cfg
        cands = _candidates(small, loose)
        line = self._held(cands, small, f, math.hypot(h, w)) if cfg.held_start else None
        if line is not None:
            self.started_by = "held"
        elif cfg.motion_start:
            cand = self._pushed_in(small, [c for c in cands if _accept(c, loose)])
            line = line_of(cand, small, f, cfg) if cand is not None else None
            self.started_by = "pushed in" if line is not None else None
        if line is None:
            return None
        m = line_mask((h, w), line.p0, line.p1, line.width_px)
        return m if m.any() else None

    def _held(self, cands: list[dict], small: np.ndarray, f: float, diag: float) -> NeedleLine | None:
        """The held rule: this frame's most confident line, once the same one held for ``confirm_frames``."""
        cfg = self.cfg
        held = [c for c in cands if _accept(c, cfg) and c["cnr"] >= cfg.start_min_cnr]
        line = line_of(max(held, key=lambda c: c["cnr"] * c["length"]), small, f, cfg) if held else None
        self.history = (self.history + [line])[-max(1, cfg.confirm_frames):]
        off = cfg.confirm_offset_frac * diag
        if (len(self.history) == cfg.confirm_frames and all(x is not None for x in self.history)
                and all(lines_agree(x, line, cfg.confirm_deg, off) for x in self.history[:-1])):
            return line
        return None

    def _pushed_in(self, small: np.ndarray, cands: list[dict]) -> dict | None:
        import cv2

        cfg = self.cfg
        i, self._n = self._n, self._n + 1
        prev, self._prev = self._prev, small
        diag = math.hypot(*small.shape)
        flow = None
        if prev is not None and prev.shape == small.shape:
            k = cfg.motion_flow_scale          # flow on a smaller copy (its cost goes with the pixel count)
            size = (max(16, round(small.shape[1] * k)), max(16, round(small.shape[0] * k)))
            u8 = [np.clip(cv2.resize(x, size, interpolation=cv2.INTER_AREA) * 255.0, 0, 255).astype(np.uint8)
                  for x in (prev, small)]
            flow = cv2.calcOpticalFlowFarneback(u8[0], u8[1], None, 0.5, 3, 5, 3, 5, 1.1, 0)
            flow = cv2.resize(flow, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_LINEAR) / k
        off = cfg.confirm_offset_frac * diag
        k = max(1, cfg.motion_frames)
        matched: set[int] = set()
        for c in sorted(cands, key=lambda c: -c["cnr"] * c["length"]):
            rel, own = (np.asarray(axial_flow(flow, c, diag)) / diag) if flow is not None else (0.0, 0.0)
            t = next((t for t in self._tracks if t["last"] == i - 1 and id(t) not in matched
                      and _agree(c["p0"], c["p1"], t["c"]["p0"], t["c"]["p1"], cfg.confirm_deg, off)), None)
            if t is None:
                t = {"rel": [], "own": []}
                self._tracks.append(t)
            matched.add(id(t))
            t.update(last=i, c=c)
            t["rel"] = (t["rel"] + [float(rel)])[-k:]      # only the last k frames are tested: a line followed
            t["own"] = (t["own"] + [float(own)])[-k:]      # through an endless search keeps constant memory
        self._tracks = [t for t in self._tracks if t["last"] == i]
        ok = [t for t in self._tracks if len(t["rel"]) >= k and sum(t["rel"][-k:]) >= cfg.motion_min_advance_frac
              and sum(r > cfg.motion_step_frac for r in t["rel"][-k:]) >= cfg.motion_min_steps
              and sum(t["own"][-k:]) >= cfg.motion_min_own_frac]
        return max(ok, key=lambda t: sum(t["rel"][-k:]))["c"] if ok else None


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
