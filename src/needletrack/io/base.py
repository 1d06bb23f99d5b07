"""The Cine interface shared by every reader."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np


def to_gray_u8(img: np.ndarray) -> np.ndarray:
    """H×W or H×W×C (RGB/RGBA, any uint dtype already scaled to uint8) -> H×W uint8."""
    import cv2

    if img.ndim == 2:
        return np.ascontiguousarray(img)
    if img.shape[2] == 1:
        return np.ascontiguousarray(img[:, :, 0])
    code = cv2.COLOR_RGBA2GRAY if img.shape[2] == 4 else cv2.COLOR_RGB2GRAY
    return cv2.cvtColor(np.ascontiguousarray(img), code)


def to_rgb_u8(img: np.ndarray) -> np.ndarray:
    """H×W or H×W×C uint8 -> H×W×3 uint8 RGB."""
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


class Cine:
    """A streaming cine loop. Iterating yields ``(image, time_s)`` pairs in order:

    * ``image``: H×W uint8 grayscale, or H×W×3 uint8 RGB when opened with ``rgb=True``;
    * ``time_s``: seconds since the first frame (float), or None when the file has no timing.

    Attributes: ``path``, ``format`` (``"video/<container>"``, ``"dicom"``, ``"folder"``, ``"mha"``),
    ``frames`` (int), ``width``, ``height``, ``fps`` (float or None), ``pixel_spacing_mm``
    (``[row_mm, col_mm]`` or None), ``duration`` (seconds or None), ``names`` (per-frame file names for image
    folders, else None), ``rgb``, ``notes`` (list of strings: conversions applied, e.g. 16-bit scaling).
    Frames are decoded one at a time; iterating again starts from the first frame.
    """

    format: str = "unknown"

    def __init__(self, path: Path, rgb: bool = False):
        self.path = Path(path)
        self.rgb = bool(rgb)
        self.frames: int = 0
        self.width: int = 0
        self.height: int = 0
        self.fps: float | None = None
        self.pixel_spacing_mm: list[float] | None = None
        self.duration: float | None = None
        self.names: list[str] | None = None
        self.notes: list[str] = []

    def __iter__(self) -> Iterator[tuple[np.ndarray, float | None]]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.frames

    def _out(self, img: np.ndarray) -> np.ndarray:
        return to_rgb_u8(img) if self.rgb else to_gray_u8(img)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _finish_timing(self) -> None:
        """Fill duration from fps/frames (duration = frames / fps, the span the cine covers)."""
        if self.duration is None and self.fps:
            self.duration = self.frames / self.fps

    def info(self) -> dict:
        """The `needletrack info` dictionary."""
        return {
            "path": str(self.path),
            "format": self.format,
            "frames": int(self.frames),
            "width": int(self.width),
            "height": int(self.height),
            "fps": None if self.fps is None else round(float(self.fps), 6),
            "pixel_spacing_mm": None if self.pixel_spacing_mm is None
            else [round(float(v), 6) for v in self.pixel_spacing_mm],
            "duration": None if self.duration is None else round(float(self.duration), 6),
            "notes": list(self.notes),
        }

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.path} {self.format} {self.frames} frames "
                f"{self.width}x{self.height} fps={self.fps}>")
