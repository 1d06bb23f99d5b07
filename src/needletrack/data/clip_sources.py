"""The sources of training clips: short frame sequences with the needle mask of every frame (split from
``clips.py``, which mixes them into the training data set).

A clip is ``T`` frames (5 in the paper) taken with gaps of 5-10 source frames. The sources, each with
``.sample(rng, (H, W), T) -> Clip``:

- ``FolderClips``  : sequences of a data set folder (docs/design.md §5); gaps drawn per frame pair.
- ``SimClips``     : generated on the fly by ``needletrack.sim.simulate_sequence`` (presets mixed by
                     weight, real ultrasound backgrounds mixed in when the folder exists).
- ``Stage0Clips``  : pseudo-clips from real still images and their masks (lesions, nerves, aponeuroses)
                     under a smooth random affine + elastic motion (STCN's static-image stage 0).
- ``RealNegativeClips`` : needle-free clips of real ultrasound (empty masks).
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from needletrack.errors import InputError


@functools.lru_cache(maxsize=1)
def train_liver_blocks() -> list:
    """The liver sweep's train-split blocks of at least 2 frames (read once per process; [] where absent):
    moving real backgrounds for the sim source, needle-free clips for the negatives source."""
    from needletrack.data.splits import liver_frames

    return [b for b in liver_frames("train") if len(b) >= 2]

# training simulator seeds live in [2**31, 2**32): any seed below 2**31 (validation, test sets) is never
# used for training.
TRAIN_SIM_SEED_BASE = 2 ** 31


@dataclass
class Clip:
    frames: np.ndarray   # T×H×W uint8
    masks: np.ndarray    # T×H×W bool
    source: str = ""
    info: dict = field(default_factory=dict)


def _fit_crop(image: np.ndarray, mask: np.ndarray, size: tuple[int, int], rng: np.random.Generator,
              zoom=(1.0, 1.35), prefer_mask: bool = True):
    """Resize so the image covers ``size`` (times a random zoom) and take a random crop, preferring one
    that keeps some of the mask."""
    h, w = size
    ih, iw = image.shape
    s = max(h / ih, w / iw) * rng.uniform(*zoom)
    nh, nw = max(h, int(math.ceil(ih * s))), max(w, int(math.ceil(iw * s)))
    img = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    msk = cv2.resize(mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST).astype(bool)
    best = None
    for _ in range(6):
        y0, x0 = int(rng.integers(0, nh - h + 1)), int(rng.integers(0, nw - w + 1))
        if best is None:
            best = (y0, x0)
        if not prefer_mask or not msk.any() or msk[y0:y0 + h, x0:x0 + w].sum() >= 0.5 * msk.sum():
            best = (y0, x0)
            break
    y0, x0 = best
    return img[y0:y0 + h, x0:x0 + w], msk[y0:y0 + h, x0:x0 + w]


def _draw_gaps(rng, n_pairs: int, gap: tuple[int, int], max_span: int) -> list[int] | None:
    lo, hi = int(gap[0]), int(gap[1])
    # shrink the gap range until the clip fits in the sequence
    while lo >= 1 and n_pairs * lo > max_span:
        lo -= 1
    if lo < 1:
        return None
    hi = max(lo, min(hi, max_span // n_pairs if n_pairs else hi))
    gaps = [int(rng.integers(lo, hi + 1)) for _ in range(n_pairs)]
    while sum(gaps) > max_span:
        k = int(np.argmax(gaps))
        gaps[k] -= 1
    return gaps


class FolderClips:
    """Clips from a data set folder (``ROOT/<seq>/frames, masks``)."""

    kind = "folder"

    def __init__(self, root: str | os.PathLike, gap=(5, 10), zoom=(1.0, 1.25)):
        from needletrack.data.folder import list_sequences, read_sequence

        self.root = Path(root)
        self.gap = tuple(gap)
        self.zoom = tuple(zoom)
        self.sequences = []
        for p in list_sequences(self.root):
            seq = read_sequence(p)
            if seq.mask_paths is None:
                raise InputError("sequence has no masks/ folder (training needs masks)", p)
            if len(seq.mask_paths) != len(seq):
                raise InputError(f"{len(seq)} frames but {len(seq.mask_paths)} masks", p)
            self.sequences.append(seq)
        self.lengths = np.array([len(s) for s in self.sequences])

    def sample(self, rng: np.random.Generator, size, n_frames: int) -> Clip:
        usable = np.flatnonzero(self.lengths >= n_frames)
        if len(usable) == 0:
            raise InputError(f"no sequence has at least {n_frames} frames", self.root)
        # sequences weighted by length, so every frame is about equally likely
        p = self.lengths[usable] / self.lengths[usable].sum()
        seq = self.sequences[int(rng.choice(usable, p=p))]
        gaps = _draw_gaps(rng, n_frames - 1, self.gap, len(seq) - 1)
        span = sum(gaps)
        start = int(rng.integers(0, len(seq) - span))
        idx = np.concatenate([[start], start + np.cumsum(gaps)]).astype(int)
        frames = [seq.frame(i) for i in idx]
        masks = [seq.mask(i) for i in idx]
        # one crop for the whole clip, placed so that most of the needle (over all frames) stays in view
        h0, w0 = frames[0].shape
        if any(f.shape != (h0, w0) for f in frames):
            raise InputError("frames of one sequence differ in size", seq.path)
        union = np.any(np.stack(masks), axis=0)
        out_f, out_m = self._crop_all(frames, masks, union, size, rng)
        return Clip(out_f, out_m, self.kind, {"sequence": seq.name, "frames": idx.tolist()})

    def _crop_all(self, frames, masks, union, size, rng):
        h, w = size
        ih, iw = frames[0].shape
        s = max(h / ih, w / iw) * rng.uniform(*self.zoom)
        nh, nw = max(h, int(math.ceil(ih * s))), max(w, int(math.ceil(iw * s)))
        u = cv2.resize(union.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST).astype(bool)
        y0, x0 = int(rng.integers(0, nh - h + 1)), int(rng.integers(0, nw - w + 1))
        for _ in range(6):
            if not u.any() or u[y0:y0 + h, x0:x0 + w].sum() >= 0.5 * u.sum():
                break
            y0, x0 = int(rng.integers(0, nh - h + 1)), int(rng.integers(0, nw - w + 1))
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        of = np.stack([cv2.resize(f, (nw, nh), interpolation=interp)[y0:y0 + h, x0:x0 + w] for f in frames])
        om = np.stack([cv2.resize(m.astype(np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR)[y0:y0 + h, x0:x0 + w]
                       >= 0.5 for m in masks])
        return of, om


def _list_image_pairs(folder: Path) -> list[tuple[Path, Path | None]]:
    from needletrack.data.folder import IMAGE_EXTS

    img_dir = folder / "images" if (folder / "images").is_dir() else folder
    mask_dir = folder / "masks"
    pairs = []
    for p in sorted(img_dir.iterdir()):
        if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."):
            m = mask_dir / p.name
            pairs.append((p, m if m.exists() else None))
    return pairs


class Stage0Clips:
    """Pseudo-clips from real still ultrasound images + masks under smooth random affine/elastic motion."""

    kind = "stage0"

    def __init__(self, folder: str | os.PathLike, p_nonempty: float = 0.85, max_rotate_deg: float = 3.0,
                 max_shift: float = 0.04, max_scale: float = 0.03, elastic: float = 0.03):
        self.folder = Path(folder)
        from needletrack.data.splits import in_background_split

        pairs = _list_image_pairs(self.folder)
        # the shared backgrounds: only their train split (held-out groups and val/test images never train)
        self.pairs = [p for p, ok in zip(pairs, in_background_split([p[0].stem for p in pairs], "train")) if ok]
        if not self.pairs:
            raise InputError("no images for stage-0 pseudo-clips", self.folder)
        self.p_nonempty = p_nonempty
        self.max_rotate_deg, self.max_shift, self.max_scale, self.elastic = max_rotate_deg, max_shift, max_scale, elastic
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._nonempty: list[int] | None = None

    def _load(self, i: int):
        if i not in self._cache:
            from needletrack.data.folder import read_gray, read_mask

            ip, mp = self.pairs[i]
            img = read_gray(ip)
            msk = read_mask(mp) if mp is not None else np.zeros_like(img, dtype=bool)
            if msk.shape != img.shape:
                msk = cv2.resize(msk.astype(np.uint8), img.shape[::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
            self._cache[i] = (img, msk)
        return self._cache[i]

    def _nonempty_ids(self) -> list[int]:
        if self._nonempty is None:
            self._nonempty = [i for i, (_, mp) in enumerate(self.pairs) if mp is not None and self._load(i)[1].any()]
        return self._nonempty

    def sample(self, rng: np.random.Generator, size, n_frames: int) -> Clip:
        ids = self._nonempty_ids()
        if ids and rng.random() < self.p_nonempty:
            i = int(rng.choice(ids))
        else:
            i = int(rng.integers(0, len(self.pairs)))
        img, msk = self._load(i)
        img, msk = _fit_crop(img, msk, size, rng, zoom=(1.0, 1.5))
        h, w = size
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy = (w - 1) / 2, (h - 1) / 2
        rate_rot = rng.uniform(-self.max_rotate_deg, self.max_rotate_deg)
        rate_t = rng.uniform(-self.max_shift, self.max_shift, size=2) * (w, h)
        rate_s = rng.uniform(-self.max_scale, self.max_scale)
        frames, masks = [], []
        for t in range(n_frames):
            ang = math.radians(rate_rot * t + rng.normal(0, 0.5))
            sc = math.exp(rate_s * t + rng.normal(0, 0.005))
            tx, ty = rate_t * t + rng.normal(0, 0.5, size=2)
            c, s = math.cos(ang) / sc, math.sin(ang) / sc
            # inverse map: output pixel -> source pixel
            dx, dy = xx - cx - tx, yy - cy - ty
            mx = c * dx + s * dy + cx
            my = -s * dx + c * dy + cy
            if self.elastic > 0 and t > 0:
                amp = self.elastic * min(h, w) * rng.uniform(0.3, 1.0)
                grid = rng.normal(0, amp / 2, size=(2, 4, 4)).astype(np.float32)
                ex = cv2.resize(grid[0], (w, h), interpolation=cv2.INTER_CUBIC)
                ey = cv2.resize(grid[1], (w, h), interpolation=cv2.INTER_CUBIC)
                mx, my = mx + ex, my + ey
            mx, my = mx.astype(np.float32), my.astype(np.float32)
            frames.append(cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101))
            masks.append(cv2.remap(msk.astype(np.float32), mx, my, cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT_101) >= 0.5)
        return Clip(np.stack(frames), np.stack(masks), self.kind, {"image": self.pairs[i][0].name})


class SimClips:
    """Clips generated on the fly by the simulator; presets mixed by weight, real backgrounds mixed in."""

    kind = "sim"

    def __init__(self, presets: dict[str, float] | list[str] | None = None, backgrounds: str | os.PathLike | None = None,
                 background_prob: float = 0.5, gap=(5, 10), episode_prob: float = 0.0, absent_prob: float = 0.0,
                 moving_prob: float = 0.0):
        from needletrack import sim  # noqa: F401  (fail early if the simulator is missing)

        # episode_prob: share of clips whose preset has withdrawal and out-of-plane episodes forced on (the needle
        # leaves and comes back within the clip more often); absent_prob: share of needle-free clips (the needle
        # never enters: empty masks), the negatives that teach the model to report nothing
        # moving_prob: share of clips drawn over a window of the real liver sweep's train blocks (real probe motion
        # and speckle, mostly out of plane, so the needle leaves the plane as the sweep moves); 0 where the sweep
        # is absent
        if not (0.0 <= episode_prob <= 1.0 and 0.0 <= absent_prob <= 1.0 and 0.0 <= moving_prob <= 1.0):
            raise ValueError("episode_prob, absent_prob and moving_prob must be in [0, 1]")
        self.moving_prob = float(moving_prob)
        self._liver = None
        self.episode_prob = float(episode_prob)
        self.absent_prob = float(absent_prob)
        if presets is None:
            presets = {"clinical": 1.0}
        if isinstance(presets, (list, tuple)):
            presets = {p: 1.0 for p in presets}
        self.preset_names = list(presets)
        w = np.array([float(presets[p]) for p in self.preset_names])
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError("simulator preset weights must be >= 0 with a positive sum")
        self.preset_p = w / w.sum()
        self.backgrounds_dir = Path(backgrounds) if backgrounds else None
        if self.backgrounds_dir is not None and not self.backgrounds_dir.is_dir():
            self.backgrounds_dir = None
        self.background_prob = background_prob if self.backgrounds_dir is not None else 0.0
        self.gap = tuple(gap)
        self._backgrounds = None

    def _bg(self):
        if self._backgrounds is None:
            from needletrack.data.splits import filter_backgrounds
            from needletrack.sim import load_backgrounds

            # only the harness's train split of the shared backgrounds (a user's own folder is used whole)
            self._backgrounds = filter_backgrounds(load_backgrounds(self.backgrounds_dir), "train")
        return self._backgrounds

    def _moving(self):
        if self._liver is None:
            self._liver = train_liver_blocks()
        return self._liver

    def sample(self, rng: np.random.Generator, size, n_frames: int) -> Clip:
        from needletrack.sim import simulate_sequence

        from needletrack.sim import preset as sim_preset

        preset = self.preset_names[int(rng.choice(len(self.preset_names), p=self.preset_p))]
        seed = TRAIN_SIM_SEED_BASE + int(rng.integers(0, 2 ** 31))
        gap = int(rng.integers(self.gap[0], self.gap[1] + 1))
        bg = self._bg() if rng.random() < self.background_prob else None
        # no draw at all without moving_prob, so older configs keep their clips
        moving = (self._moving() or None) if self.moving_prob > 0 and rng.random() < self.moving_prob else None
        sz = size[0] if size[0] == size[1] else tuple(size)
        needle = "absent" if rng.random() < self.absent_prob else "moving"
        cfg = sim_preset(preset)
        episode = needle == "moving" and rng.random() < self.episode_prob
        if episode:
            cfg = cfg.replace(withdraw_prob=1.0, out_of_plane_prob=1.0)
        frames, masks = [], []
        for frame, mask, _needle in simulate_sequence(n_frames=n_frames, size=sz, preset=cfg, seed=seed,
                                                      backgrounds=bg, frame_step=gap, needle=needle,
                                                      moving_background=moving):
            frames.append(frame)
            masks.append(mask)
        f, m = np.stack(frames), np.stack(masks).astype(bool)
        if f.shape[1:] != tuple(size):
            f = np.stack([cv2.resize(x, size[::-1], interpolation=cv2.INTER_AREA) for x in f])
            m = np.stack([cv2.resize(x.astype(np.float32), size[::-1]) >= 0.5 for x in m])
        return Clip(f, m, self.kind, {"preset": preset, "seed": seed, "gap": gap, "background": bg is not None,
                                      "needle": needle, "episode": episode, "moving": moving is not None})


class RealNegativeClips:
    """Needle-free clips of real ultrasound, with empty masks: windows of the liver sweep's train block (real
    probe motion and speckle) and the train split's background images held nearly still (a pixel or two of
    hand jitter). Only the harness's train splits (needletrack.data.splits) are used."""

    kind = "negatives"

    def __init__(self, liver_prob: float = 0.5, gap=(1, 3)):
        from needletrack.data import splits

        self.liver = train_liver_blocks()
        self.stills = [img for img, _m, _meta in splits.background_split("train")]
        if not self.liver and not self.stills:
            raise InputError("no real needle-free data for negative clips (../shared/data absent)")
        self.liver_prob = float(liver_prob) if self.liver and self.stills else (1.0 if self.liver else 0.0)
        self.gap = tuple(gap)

    def sample(self, rng: np.random.Generator, size, n_frames: int) -> Clip:
        h, w = size
        if rng.random() < self.liver_prob:
            block = self.liver[int(rng.integers(len(self.liver)))]
            gap = int(rng.integers(self.gap[0], self.gap[1] + 1))
            span = (n_frames - 1) * gap + 1
            start = int(rng.integers(0, max(1, len(block) - span + 1)))
            idx = [min(start + k * gap, len(block) - 1) for k in range(n_frames)]
            if rng.random() < 0.5:
                idx = idx[::-1]
            frames = [block[i] for i in idx]
            meta = {"source": "liver_sweep", "frames": idx}
        else:
            img = self.stills[int(rng.integers(len(self.stills)))]
            frames = []
            for _ in range(n_frames):
                dx, dy = rng.uniform(-1.5, 1.5, 2)
                mat = np.float32([[1, 0, dx], [0, 1, dy]])
                frames.append(cv2.warpAffine(img, mat, (img.shape[1], img.shape[0]), borderMode=cv2.BORDER_REFLECT_101))
            meta = {"source": "still"}
        f = np.stack([cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA) for x in frames])
        return Clip(f, np.zeros(f.shape, bool), self.kind, meta)
