"""Masks: the one rule that turns a mask image or array into needle / background, and mask file I/O.

A mask file is ideally an 8-bit PNG, 0 = background, 255 = needle, the size of its frame. Every place that
reads a mask (``track --first-mask``, ``validate``, ``evaluate``, data set loading and ``Tracker.step(mask=)``)
calls :func:`binarize_mask`, so one mask means the same everywhere:

* colour (RGB/RGBA, either channel order): a pixel's brightest colour channel counts (a pure-red mask on
  black is a needle; alpha is ignored);
* a pixel is needle where its value is above half of the mask's range, and the range is read from the
  values: at most 1 -> 0..1 (a 0/1 mask, a [0, 1] probability), at most 255 -> 0..255 (so a 0/255 mask
  stored as float or 16-bit reads the same as the 8-bit PNG), otherwise the type's full range (65535 for
  16-bit) or, for floats, the largest value;
* NaN or infinite values are refused (InputError), never silently made background;
* ``bool`` arrays are taken as they are.

:func:`mask_warning` says when a mask is accepted but unlikely to be a needle (the whole frame, most of it,
or scattered noise); callers show it as a one-line warning.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from needletrack.errors import InputError

MASK_THRESHOLD = 128   # the 0..255 case of the rule: >= 128 is needle
MAX_NEEDLE_FRACTION = 0.4   # a needle shaft is a few per cent of a frame; noise at 50% density is caught here
MAX_PIECES = 20


def mask_range(m: np.ndarray) -> float:
    """The full-scale value of a mask array under the rule (1, 255, the type's maximum or the float max)."""
    hi = float(m.max(initial=0))
    if hi <= 1:
        return 1.0
    if hi <= 255:
        return 255.0
    if np.issubdtype(m.dtype, np.integer):
        return float(np.iinfo(m.dtype).max)
    return hi if hi > 65535 else 65535.0


def binarize_mask(mask, source: object = None) -> np.ndarray:
    """Mask image or array (H×W or H×W×C; bool, integer or float) -> H×W bool, by the module's rule.

    ``source`` (a path or a label such as "first mask") prefixes error messages."""
    m = np.asarray(mask)
    if m.ndim == 3:
        c = m.shape[2]
        if c in (1, 2):          # gray, gray + alpha
            m = m[:, :, 0]
        elif c in (3, 4):        # RGB(A) or BGR(A): the brightest colour channel
            m = m[:, :, :3].max(axis=2)
        else:
            raise InputError(f"mask has {c} channels; expected gray or RGB(A)", source)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise InputError(f"mask must be a 2-D image, got shape {tuple(np.shape(mask))}", source)
    if m.dtype == bool:
        return m
    if np.issubdtype(m.dtype, np.floating):
        if not np.all(np.isfinite(m)):
            raise InputError("mask holds NaN or infinite values; a mask must be 0/255 (or 0/1)", source)
    elif not np.issubdtype(m.dtype, np.integer):
        raise InputError(f"mask values of type {m.dtype} are not supported", source)
    return m > mask_range(m) / 2.0


def mask_warning(mask_b: np.ndarray) -> str | None:
    """Why an accepted bool mask is unlikely to be a needle (one short phrase), or None."""
    m = np.asarray(mask_b, bool)
    if m.size == 0 or not m.any():
        return None
    if m.all():
        return "covers the whole frame"
    frac = float(m.mean())
    if frac > MAX_NEEDLE_FRACTION:
        return f"covers {frac:.0%} of the frame (a needle is a thin line)"
    import cv2

    n, _ = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
    if n - 1 > MAX_PIECES:
        return f"is {n - 1} scattered pieces (noise rather than a needle?)"
    return None


def read_mask_array(path) -> np.ndarray:
    """A mask file as decoded (any depth and channels), after the image header check."""
    from needletrack.io.folder import read_image_raw

    path = Path(path)
    if not path.exists():
        raise InputError("no such mask file", path)
    if path.is_dir():
        raise InputError("is a folder, not a mask file", path)
    return read_image_raw(path)


def read_mask(path, shape=None) -> np.ndarray:
    """Mask file -> H×W bool by :func:`binarize_mask`. ``shape`` (H, W): InputError naming the file if the
    size differs."""
    path = Path(path)
    m = binarize_mask(read_mask_array(path), path)
    if shape is not None and tuple(m.shape) != tuple(shape[:2]):
        raise InputError(f"mask size {m.shape[1]}x{m.shape[0]} differs from the frame size "
                         f"{shape[1]}x{shape[0]}", path)
    return m


def mask_to_u8(mask) -> np.ndarray:
    """Any mask array (bool, 0/1, 0..255, float probability, ...) -> 0/255 uint8 by the same rule."""
    return binarize_mask(mask).astype(np.uint8) * 255


def write_mask(path, mask) -> None:
    """Write a 0/255 PNG atomically."""
    from needletrack.utils import write_png_atomic

    write_png_atomic(path, mask_to_u8(mask))
