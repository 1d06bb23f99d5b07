"""The data set folder format (docs/design.md §5), one sequence per folder, DAVIS-like:

    ROOT/<seq>/frames/00000.png ...   8-bit grayscale
    ROOT/<seq>/masks/00000.png ...    0/255, same size; all-zero = needle not visible
    ROOT/<seq>/meta.json              optional {"fps": 25, "pixel_spacing_mm": [dy, dx], "source": "..."}
    ROOT/<seq>/needle.json            optional, simulated data: per-frame tip, tail, angle, visible fraction

Masks are read by the one mask rule of :mod:`needletrack.io.masks` (0/255 and 0/1 masks, colour masks and
masks of any depth mean the same there as everywhere else).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from needletrack.errors import InputError
from needletrack.utils import natural_key, write_json_atomic, write_png_atomic

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _images_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")),
                  key=lambda p: natural_key(p.name))


def read_gray(path: Path) -> np.ndarray:
    """Image file -> H×W uint8 gray (RGB converted, 16-bit scaled by v*255/65535)."""
    from needletrack.io.folder import read_image_u8

    return read_image_u8(Path(path))


def read_mask(path: Path, shape=None) -> np.ndarray:
    """Read a mask as bool (needletrack.io.masks rule); ``shape`` (H, W) checks the size."""
    from needletrack.io.masks import read_mask as _read_mask

    return _read_mask(path, shape)


def mask_to_png(mask: np.ndarray) -> np.ndarray:
    """bool / {0,1} / 0..255 / float probability mask -> 0/255 uint8 (see needletrack.io.masks)."""
    from needletrack.io.masks import mask_to_u8

    return mask_to_u8(mask)


@dataclass
class Sequence:
    path: Path
    frame_paths: list[Path]
    mask_paths: list[Path] | None
    meta: dict = field(default_factory=dict)
    needle: list | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def __len__(self) -> int:
        return len(self.frame_paths)

    def frame(self, i: int) -> np.ndarray:
        return read_gray(self.frame_paths[i])

    def mask(self, i: int) -> np.ndarray:
        if self.mask_paths is None:
            raise InputError("sequence has no masks/ folder", self.path)
        return read_mask(self.mask_paths[i])

    @property
    def fps(self) -> float | None:
        return self.meta.get("fps")

    @property
    def pixel_spacing_mm(self):
        return self.meta.get("pixel_spacing_mm")


def read_sequence(path: str | Path) -> Sequence:
    path = Path(path)
    fdir = path / "frames"
    if not fdir.is_dir():
        raise InputError("not a sequence folder (no frames/ inside)", path)
    frames = _images_in(fdir)
    if not frames:
        raise InputError("frames/ holds no images", fdir)
    mdir = path / "masks"
    masks = _images_in(mdir) if mdir.is_dir() else None
    meta = _read_json(path / "meta.json") or {}
    needle = _read_json(path / "needle.json")
    return Sequence(path, frames, masks, meta, needle)


def _read_json(p: Path):
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"invalid JSON ({e})", p) from None


def list_sequences(root: str | Path) -> list[Path]:
    """Sequence folders under ``root`` (or ``root`` itself if it is one), naturally sorted."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("no such folder", root)
    if (root / "frames").is_dir():
        return [root]
    seqs = sorted((p for p in root.iterdir() if (p / "frames").is_dir()), key=lambda p: natural_key(p.name))
    if not seqs:
        raise InputError("no sequence folders (<seq>/frames/) found", root)
    return seqs


class SequenceWriter:
    """Write one sequence in the folder format. Frames and masks are written as they come;
    meta.json and needle.json are written (atomically) by close()."""

    def __init__(self, root: str | Path, name: str, meta: dict | None = None):
        self.path = Path(root) / name
        (self.path / "frames").mkdir(parents=True, exist_ok=True)
        (self.path / "masks").mkdir(parents=True, exist_ok=True)
        self.meta = dict(meta or {})
        self.needle: list = []
        self.n = 0

    def add(self, frame: np.ndarray, mask: np.ndarray | None = None, needle: dict | None = None) -> None:
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 2:
            raise ValueError("frames must be HxW uint8")
        name = f"{self.n:05d}.png"
        write_png_atomic(self.path / "frames" / name, frame)
        if mask is not None:
            if mask.shape != frame.shape:
                raise ValueError("mask size differs from frame size")
            write_png_atomic(self.path / "masks" / name, mask_to_png(mask))
        if needle is not None:
            self.needle.append(dict(needle, frame=self.n))
        self.n += 1

    def close(self) -> Path:
        write_json_atomic(self.path / "meta.json", self.meta)
        if self.needle:
            write_json_atomic(self.path / "needle.json", self.needle)
        return self.path

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *a):
        if exc_type is None:
            self.close()
