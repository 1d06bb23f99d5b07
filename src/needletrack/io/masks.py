"""Mask I/O. A mask file is an 8-bit PNG, 0 = background, 255 = needle, same size as its frame.

Reading accepts any image the folder reader accepts; values other than 0/255 are binarised at 128
(``>= 128`` is needle; 16-bit masks are first scaled to 8-bit), RGB masks are converted to gray first.
The data set validator reports such masks (they are read, but are not in the format).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from needletrack.errors import InputError

MASK_THRESHOLD = 128


def read_mask(path, shape=None) -> np.ndarray:
    """Mask file -> H×W bool. ``shape`` (H, W): raise InputError naming the file if the size differs."""
    from needletrack.io.folder import read_image_u8

    path = Path(path)
    if not path.exists():
        raise InputError("no such mask file", path)
    m = read_image_u8(path) >= MASK_THRESHOLD
    if shape is not None and tuple(m.shape) != tuple(shape[:2]):
        raise InputError(f"mask size {m.shape[1]}x{m.shape[0]} differs from the frame size "
                         f"{shape[1]}x{shape[0]}", path)
    return m


def mask_to_u8(mask) -> np.ndarray:
    """bool / {0,1} / {0..255} / float probability -> 0/255 uint8."""
    m = np.asarray(mask)
    if m.dtype == bool:
        return m.astype(np.uint8) * 255
    if np.issubdtype(m.dtype, np.floating):
        return np.where(m >= 0.5, 255, 0).astype(np.uint8)
    if m.max(initial=0) <= 1:
        return (m > 0).astype(np.uint8) * 255
    return np.where(m >= MASK_THRESHOLD, 255, 0).astype(np.uint8)


def write_mask(path, mask) -> None:
    """Write a 0/255 PNG atomically."""
    from needletrack.utils import write_png_atomic

    write_png_atomic(path, mask_to_u8(mask))
