"""The learned single-frame detector at run time: a needle segment in one frame, or None.

    det = LearnedDetector.from_pretrained()          # weights/detector.safetensors
    seg, prob = det.find(img)                         # img: H×W float32 in [0, 1]; seg: Segment or None

The network (:mod:`needletrack.models.detector`) gives a needle probability map at half its input; the
segment is fitted on it as the tracker fits the tracking network's map
(:func:`needletrack.track.segment.fit_segment_scaled`), and counts only when its ridge probability reaches
``min_score`` over at least ``min_length_frac`` of the frame's diagonal. It runs with PyTorch on one thread,
only on frames where the tracker has no needle (searching, or the needle gone).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from needletrack.errors import NeedletrackError

DETECTOR_FORMAT = "needletrack-detector-1"


def save_detector(model, path, meta: dict | None = None) -> Path:
    """Write the detector's weights, config and provenance to ``path`` atomically (safetensors)."""
    from needletrack.models.weights import write_weights

    return write_weights(model, path, DETECTOR_FORMAT, model.config_dict(), meta)


def detector_path(name_or_path="detector") -> Path:
    from needletrack.models.weights import resolve_weights

    return resolve_weights(name_or_path)


def load_detector(name_or_path="detector"):
    """The detector network (eval mode) from a .safetensors file or a shipped name."""
    from safetensors import safe_open

    from needletrack.models.detector import DetectorConfig, NeedleDetectorNet
    from needletrack.models.weights import read_header_metadata

    path = detector_path(name_or_path)
    if not path.is_file():
        raise NeedletrackError(f"no detector weights at {path}")
    header = read_header_metadata(path)
    if header.get("needletrack_format") != DETECTOR_FORMAT:
        raise NeedletrackError(f"{path} is not a needletrack detector file")
    cfg = json.loads(header.get("needletrack_config", "{}"))
    model = NeedleDetectorNet(DetectorConfig(input_size=int(cfg.get("input_size", 256)),
                                             widths=tuple(cfg.get("widths", (16, 24, 32, 48, 64))),
                                             in_channels=int(cfg.get("in_channels", 1))))
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise NeedletrackError(f"{path}: the detector's weights do not fit its config ({e})") from None
    return model.eval()


class LearnedDetector:
    """Run the detector network on frames (module doc)."""

    def __init__(self, model, min_score: float = 0.6, min_length_frac: float = 0.06, threshold: float = 0.5,
                 threads: int | None = 1, max_change: float | None = 0.1):
        import torch

        self.torch = torch
        self.model = model.eval()
        self.size = int(model.cfg.input_size)
        self.min_score = float(min_score)
        self.min_length_frac = float(min_length_frac)
        self.threshold = float(threshold)
        self.threads = threads
        # frames that do not correlate (the median grey change over the imaged region above this: speckle drawn
        # afresh, a cut, a very low frame rate) carry no usable motion; the detector then sees the frame alone,
        # as on a stream's first frame. Simulator v3's val clips stay below 0.083 (their 99th centile 0.03-0.08)
        self.max_change = max_change
        self._lb = None
        self._last = None            # (the last call's frame, its letterboxed tensor)

    @classmethod
    def from_pretrained(cls, name_or_path="detector", **kwargs) -> "LearnedDetector":
        return cls(load_detector(name_or_path), **kwargs)

    @staticmethod
    def available(name_or_path="detector") -> bool:
        return detector_path(name_or_path).is_file()

    def prob(self, img: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
        """The needle probability map at the frame's size (H×W float32). ``prev``: the stream's previous frame
        (a two-channel detector sees the change since it; None: no change)."""
        import cv2

        from needletrack.models.detector import detector_input
        from needletrack.track.letterbox import Letterbox

        torch = self.torch
        img = np.asarray(img, dtype=np.float32)
        if self._lb is None or self._lb.frame_hw != img.shape:
            self._lb = Letterbox(img.shape, (self.size, self.size))
            self._last = None
        x = torch.from_numpy(self._lb.forward(img))[None, None]
        xp = None
        if prev is not None and np.shape(prev) == img.shape and self.model.cfg.in_channels > 1:
            prev = np.asarray(prev, dtype=np.float32)
            if self.max_change is None or frame_change(img, prev) <= self.max_change:
                # a stream's previous frame is the last call's frame: its letterboxed copy is kept (a copy of
                # the frame beside it, so a caller's buffer written over in place is not mistaken for it)
                same = self._last is not None and np.array_equal(prev, self._last[0])
                xp = self._last[1] if same else torch.from_numpy(self._lb.forward(prev))[None, None]
        if self.model.cfg.in_channels > 1:      # kept only where a change channel will read it
            self._last = (img.copy(), x)
        x = detector_input(x, xp, int(self.model.cfg.in_channels))
        old = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                p = torch.sigmoid(self.model(x))[0, 0].numpy()
        finally:
            if self.threads:
                torch.set_num_threads(old)
        p = cv2.resize(p, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return self._lb.backward(p)

    def find(self, img: np.ndarray, prev: np.ndarray | None = None, prior=None, min_score: float | None = None,
             min_length_frac: float | None = None, max_edge_frac: float | None = None):
        """(segment or None, probability map): the most probable straight needle in the frame; None unless its
        ridge probability reaches ``min_score`` over ``min_length_frac`` of the diagonal (defaults: the
        detector's), and, with ``max_edge_frac``, its shallow end lies within that share of the diagonal of the
        imaged region's border (a needle comes in from outside). ``prev``: the stream's previous frame (see
        :meth:`prob`)."""
        from needletrack.track.segment import fit_segment_scaled

        prob = self.prob(img, prev)
        seg = fit_segment_scaled(prob, prior, self.threshold, 0.5 * self.threshold)
        diag = math.hypot(*prob.shape)
        floor = self.min_score if min_score is None else float(min_score)
        min_len = self.min_length_frac if min_length_frac is None else float(min_length_frac)
        if seg is None or seg.score < floor or seg.length < min_len * diag:
            return None, prob
        if max_edge_frac is not None and edge_frac(img, seg) > max_edge_frac:
            return None, prob
        return seg, prob

    def mask(self, shape, seg, prob: np.ndarray) -> np.ndarray:
        """The needle mask of a found segment: the segment at its width plus the detector's pieces on it."""
        from needletrack.track.segment import segment_mask

        return segment_mask(shape, seg, prob >= self.threshold, rule="union")


def frame_change(img: np.ndarray, prev: np.ndarray) -> float:
    """The median absolute grey change between two frames over the imaged region (either frame above 0.03)."""
    content = (img > 0.03) | (prev > 0.03)
    return float(np.median(np.abs(img - prev)[content])) if content.any() else 0.0


def edge_frac(img: np.ndarray, seg) -> float:
    """How far the segment's shallow end lies from the imaged region's border along its line, as a share of the
    diagonal (measured as the training-free detector measures it, on a copy at most 256 px wide)."""
    import cv2

    from needletrack.geometry import shallow_first
    from needletrack.track.autoinit import _content_mask, _extend_to_content_border

    h, w = img.shape
    f = min(1.0, 256.0 / max(h, w))
    small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA) \
        if f < 1.0 else np.asarray(img, np.float32)
    tail, tip = shallow_first(np.asarray(seg.p0, float) * f, np.asarray(seg.p1, float) * f)
    end = _extend_to_content_border(small, tail, tip, step=2.0, content=_content_mask(small))
    return float(np.hypot(*(np.asarray(end) - tail)) / math.hypot(*small.shape))


class HeldSegments:
    """The same segment over ``frames`` consecutive frames (within ``max_deg`` and ``offset_frac`` of the
    diagonal of the last one): the learned detector's start and re-detection rule."""

    def __init__(self, frames: int, max_deg: float, offset_frac: float):
        self.frames, self.max_deg, self.offset_frac = max(1, int(frames)), float(max_deg), float(offset_frac)
        self.history: list = []

    def clear(self) -> None:
        self.history = []

    def update(self, seg, diag: float) -> bool:
        self.history = (self.history + [seg])[-self.frames:]
        if len(self.history) < self.frames or any(s is None for s in self.history):
            return False
        off = self.offset_frac * diag
        return all(s.angle_to(seg) <= self.max_deg and s.offset_to(seg) <= off for s in self.history[:-1])


def default_detector_available() -> bool:
    try:
        return LearnedDetector.available()
    except Exception:  # noqa: BLE001 (no weights directory at all)
        return False


__all__ = ["LearnedDetector", "HeldSegments", "load_detector", "save_detector", "default_detector_available", "DETECTOR_FORMAT",
           "detector_path"]
