"""A test fixture: a trivially learnable toy data set (bright straight needle advancing over noisy dark
tissue), for tests that must not depend on the simulator. Written in the data set folder format.

(Was ``needletrack.train.toy``; only tests used it, so it lives with them. Import it as ``toy_data``:
pytest puts tests/ on ``sys.path``.)"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np


def toy_sequence(n_frames: int, size: int, rng: np.random.Generator):
    """Frames (T×S×S uint8) and masks (T×S×S bool) of one toy insertion."""
    angle = math.radians(rng.uniform(15, 45))
    left = rng.random() < 0.5
    y0 = rng.uniform(0.05, 0.3) * size
    x0 = 0.0 if left else size - 1.0
    dx = math.cos(angle) * (1 if left else -1)
    dy = math.sin(angle)
    width = max(2, int(round(size / 24)))
    start_len = rng.uniform(0.25, 0.4) * size
    speed = rng.uniform(0.02, 0.04) * size
    frames, masks = [], []
    for t in range(n_frames):
        length = start_len + speed * t
        x1, y1 = x0 + dx * length, y0 + dy * length
        m = np.zeros((size, size), np.uint8)
        cv2.line(m, (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1))), 1, width)
        bg = rng.normal(50, 12, size=(size, size)).astype(np.float32)
        img = np.where(m > 0, rng.normal(210, 15, size=(size, size)), bg)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
        masks.append(m.astype(bool))
    return np.stack(frames), np.stack(masks)


def make_toy_dataset(root: str | Path, sequences: int = 2, frames: int = 12, size: int = 64, seed: int = 0) -> Path:
    from needletrack.data.folder import SequenceWriter

    rng = np.random.default_rng(seed)
    root = Path(root)
    for i in range(sequences):
        f, m = toy_sequence(frames, size, rng)
        with SequenceWriter(root, f"toy_{i:03d}", {"fps": 25, "source": "tests/toy_data.py"}) as w:
            for k in range(len(f)):
                w.add(f[k], m[k])
    return root
