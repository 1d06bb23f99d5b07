"""Training clips: short frame sequences with the needle mask of every frame.

A clip is ``T`` frames (5 in the paper) taken with gaps of 5-10 source frames, in random time order.
Kinds of source, mixed by weight (see ``ClipDataset``; the sources are in ``clip_sources.py``):

- ``FolderClips``  : sequences of a data set folder (docs/design.md §5); gaps drawn per frame pair.
- ``SimClips``     : generated on the fly by ``needletrack.sim.simulate_sequence`` (presets mixed by
                     weight, real ultrasound backgrounds mixed in when the folder exists).
- ``Stage0Clips``  : pseudo-clips from real still images and their masks (lesions, nerves, aponeuroses)
                     under a smooth random affine + elastic motion (STCN's static-image stage 0).
- ``RealNegativeClips`` : needle-free real ultrasound (the ``negatives`` kind).

Determinism: every sample is a pure function of ``(seed, index)`` (``np.random.default_rng([seed, index])``),
so the data does not depend on the number of workers, which worker produced it, or whether the run was
resumed; ranks and steps are mapped to disjoint index ranges by ``StepBatchSampler``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from needletrack.data.augment import AugmentConfig, augment_clip
# the sources (clip_sources.py): every name stays importable from here
from needletrack.data.clip_sources import (TRAIN_SIM_SEED_BASE, Clip, FolderClips, RealNegativeClips,  # noqa: F401
                                           SimClips, Stage0Clips, _draw_gaps, _fit_crop, _list_image_pairs)
from needletrack.errors import InputError


@dataclass
class SourceSpec:
    source: object
    weight: float
    steps: tuple[int | None, int | None] = (None, None)  # active for start <= step < end

    def active(self, step: int) -> bool:
        a, b = self.steps
        return (a is None or step >= a) and (b is None or step < b)


def build_source(spec: dict, default_gap=(5, 10)):
    """Build one source from a config dict: ``{kind: sim|folder|stage0, weight, steps: [a, b], ...}``.
    Returns ``SourceSpec`` or None (with a reason) when an optional folder is absent."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    allowed = {"sim": {"presets", "backgrounds", "background_prob", "episode_prob", "absent_prob", "moving_prob"},
               "negatives": {"liver_prob"}, "folder": {"root", "zoom"},
               "stage0": {"dir", "p_nonempty", "max_rotate_deg", "max_shift", "max_scale", "elastic"}}
    if kind not in allowed:
        raise ValueError(f"unknown clip source kind {kind!r} (sim, negatives, folder, stage0)")
    weight = float(spec.pop("weight", 1.0))
    if weight < 0:
        raise ValueError("source weight must be >= 0")
    steps = tuple(spec.pop("steps", None) or (None, None))
    optional = bool(spec.pop("optional", kind in ("stage0", "negatives")))
    gap = tuple(spec.pop("gap", default_gap))
    unknown = sorted(set(spec) - allowed[kind])
    if unknown:
        raise ValueError(f"unknown option(s) for a {kind} source: {', '.join(unknown)}")
    if kind == "sim":
        src = SimClips(presets=spec.get("presets"), backgrounds=spec.get("backgrounds"),
                       background_prob=float(spec.get("background_prob", 0.5)), gap=gap,
                       episode_prob=float(spec.get("episode_prob", 0.0)), absent_prob=float(spec.get("absent_prob", 0.0)),
                       moving_prob=float(spec.get("moving_prob", 0.0)))
    elif kind == "negatives":
        try:
            src = RealNegativeClips(liver_prob=float(spec.get("liver_prob", 0.5)))
        except InputError:
            if optional:
                return None, "real needle-free data (../shared/data) absent, negative clips skipped"
            raise
    elif kind == "folder":
        root = spec.get("root")
        if root is None:
            raise ValueError("a folder source needs `root`")
        if not Path(root).is_dir() and optional:
            return None, f"folder source {root} absent, skipped"
        src = FolderClips(root, gap=gap, zoom=tuple(spec.get("zoom", (1.0, 1.25))))
    else:
        d = spec.pop("dir", None)
        if d is None:
            raise ValueError("a stage0 source needs `dir`")
        if not Path(d).is_dir():
            if optional:
                return None, f"stage-0 images {d} absent, skipped"
            raise InputError("no such folder", d)
        src = Stage0Clips(d, **spec)
    return SourceSpec(src, weight, steps), None


def clip_to_tensors(clip: Clip, as_uint8: bool = False):
    """T×1×H×W tensors: float frames in [0, 1] and float 0/1 masks, or both uint8 (4x less to move between
    processes; convert with ``frames.float() / 255`` and ``masks.float()`` on the device)."""
    import torch

    f = torch.from_numpy(np.ascontiguousarray(clip.frames)).unsqueeze(1)
    m = torch.from_numpy(np.ascontiguousarray(clip.masks).astype(np.uint8)).unsqueeze(1)
    if as_uint8:
        return f, m
    return f.float().div_(255.0), m.float()


try:
    from torch.utils.data import Dataset as _TorchDataset
except ImportError:  # pragma: no cover - torch is a dependency
    _TorchDataset = object


class ClipDataset(_TorchDataset):
    """Map-style data set over an unbounded index space: item ``i`` is a clip drawn with
    ``default_rng([seed, i])``. Returns ``{"frames": T×1×H×W float [0,1], "masks": T×1×H×W float,
    "source": int}`` (uint8 frames and masks with ``as_uint8``). ``samples_per_step`` maps an index to its training step (for step-windowed sources)."""

    def __init__(self, sources: list[SourceSpec], size, n_frames: int = 5, seed: int = 0,
                 augment: AugmentConfig | None = None, reverse_prob: float = 0.5, samples_per_step: int = 1,
                 length: int = 2 ** 62, as_uint8: bool = False):
        if not sources:
            raise ValueError("no clip source")
        self.sources = sources
        self.size = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
        self.n_frames = int(n_frames)
        self.seed = int(seed)
        self.augment = augment
        self.reverse_prob = float(reverse_prob)
        self.samples_per_step = max(1, int(samples_per_step))
        self.length = length
        self.as_uint8 = as_uint8

    def __len__(self) -> int:
        return self.length

    def clip(self, index: int) -> Clip:
        rng = np.random.default_rng([self.seed, int(index)])
        step = int(index) // self.samples_per_step
        active = [s for s in self.sources if s.active(step) and s.weight > 0]
        if not active:
            active = [s for s in self.sources if s.weight > 0] or self.sources
        w = np.array([s.weight for s in active], dtype=np.float64)
        k = int(rng.choice(len(active), p=w / w.sum())) if len(active) > 1 else 0
        clip = active[k].source.sample(rng, self.size, self.n_frames)
        if rng.random() < self.reverse_prob:
            clip.frames, clip.masks = clip.frames[::-1].copy(), clip.masks[::-1].copy()
            clip.info["reversed"] = True
        if self.augment is not None:
            clip.frames, clip.masks = augment_clip(clip.frames, clip.masks, rng, self.augment)
        clip.info["source_index"] = self.sources.index(active[k])
        return clip

    def __getitem__(self, index: int) -> dict:
        clip = self.clip(index)
        f, m = clip_to_tensors(clip, self.as_uint8)
        return {"frames": f, "masks": m, "source": clip.info["source_index"]}


class StepBatchSampler:
    """Yields, for each training step from ``start_step`` to ``end_step``, this rank's indices:
    ``step·B·world + rank·B + [0, B)``. Disjoint across ranks and steps; resuming at step k yields
    exactly what an uninterrupted run would have from step k on."""

    def __init__(self, batch_size: int, start_step: int, end_step: int, rank: int = 0, world_size: int = 1):
        self.b, self.start, self.end, self.rank, self.world = batch_size, start_step, end_step, rank, world_size

    def __iter__(self):
        g = self.b * self.world
        for step in range(self.start, self.end):
            base = step * g + self.rank * self.b
            yield list(range(base, base + self.b))

    def __len__(self) -> int:
        return max(0, self.end - self.start)


def worker_init(_worker_id: int) -> None:
    """DataLoader worker setup: one thread each for OpenCV and torch (workers run in parallel)."""
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
