"""Real ultrasound backgrounds: frames (and target masks) read at run time, never shipped.

Layout understood: ``DIR/images/*.png`` with optional ``DIR/masks/<same name>`` (0/255) and
``DIR/index.json`` (a list of ``{"name", "source", "class", "mask"}``), or a flat folder of images.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from needletrack.errors import InputError

_CACHE: dict[str, list] = {}
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _read_gray(path: Path):
    """8-bit grayscale image or None (Pillow: quiet about colour profiles that libpng warns on)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    except (OSError, ValueError):
        return None


def load_backgrounds(directory, max_side: int | None = None) -> list:
    """List of ``(image_u8 HxW, mask_bool HxW, meta dict)``; ``[]`` when the folder is absent or empty.

    ``meta`` holds the index entry (name, source, class, what the mask marks) and ``path``.
    Unreadable images are skipped. Results are cached per folder (DataLoader workers reuse them).
    """
    import cv2

    if directory is None:
        return []
    d = Path(directory)
    key = f"{d.resolve()}|{max_side}"
    if key in _CACHE:
        return _CACHE[key]
    img_dir = d / "images" if (d / "images").is_dir() else d
    if not img_dir.is_dir():
        return []
    index = {}
    ip = d / "index.json"
    if ip.exists():
        try:
            for e in json.loads(ip.read_text()):
                index[str(e.get("name"))] = dict(e)
        except (OSError, ValueError, TypeError, AttributeError) as e:
            raise InputError(f"invalid background index ({e})", ip) from None
    out = []
    for p in sorted(img_dir.iterdir()):
        if p.suffix.lower() not in IMAGE_EXTS or p.name.startswith("."):
            continue
        img = _read_gray(p)
        if img is None or min(img.shape) < 32:
            continue
        m = None
        mp = d / "masks" / p.name
        if mp.exists() and mp != p:
            m = _read_gray(mp)
            if m is not None and m.shape != img.shape:
                m = cv2.resize(m, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
        mask = (m >= 128) if m is not None else np.zeros(img.shape, bool)
        if max_side and max(img.shape) > max_side:
            f = max_side / max(img.shape)
            size = (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        meta = dict(index.get(p.stem, {"name": p.stem}))
        meta["path"] = os.fspath(p)
        out.append((img, mask, meta))
    _CACHE[key] = out
    return out


def has_markers(img: np.ndarray, min_pixels: int = 12) -> bool:
    """Whether a real frame carries burned-in text, calipers or other markers: small, near-white, sharply
    bounded marks (white top-hat over a 9x9 neighbourhood at least 90 grey levels, grey at least 200), or
    bright pixels outside the imaging window. Such an image must never be mirrored (text would read backwards)."""
    import cv2

    x = np.asarray(img, np.uint8)
    top = cv2.morphologyEx(x, cv2.MORPH_TOPHAT, np.ones((9, 9), np.uint8))
    marks = (top >= 90) & (x >= 200)
    if int(marks.sum()) >= min_pixels:
        return True
    # text beside the image on a dark screen: bright pixels in rows/columns that are otherwise black
    dark_cols = (x < 12).mean(axis=0) > 0.9
    dark_rows = (x < 12).mean(axis=1) > 0.9
    side = x[:, dark_cols]
    band = x[dark_rows]
    return bool((side >= 150).sum() + (band >= 150).sum() >= min_pixels)
