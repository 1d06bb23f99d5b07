"""Check a data set folder (docs/design.md §5) and say exactly what is wrong, file by file.

``validate_dataset(root) -> list[Problem]``; an empty list means the folder is in the format. Each
problem names the file (or folder) and what is wrong with it, and is an ``"error"`` (the data cannot be
used as is) or a ``"warning"`` (readable, but not in the format: it is converted when read, e.g. a mask
with values other than 0/255 is binarised by the one mask rule of needletrack.io.masks, an RGB or 16-bit
frame is converted to 8-bit gray).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from needletrack.errors import InputError
from needletrack.io.masks import binarize_mask, mask_range, mask_warning
from needletrack.utils import natural_key

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NEEDLE_KEYS = ("frame", "visible", "tip", "tail", "angle_deg")


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str
    level: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        return f"{self.level}: {self.path}: {self.message}"

    def to_dict(self) -> dict:
        return {"path": str(self.path), "message": self.message, "level": self.level}


def _images(folder: Path) -> tuple[list[Path], list[Path]]:
    imgs, others = [], []
    for p in folder.iterdir():
        if p.name.startswith("."):
            continue
        (imgs if p.is_file() and p.suffix.lower() in IMAGE_EXTS else others).append(p)
    imgs.sort(key=lambda p: natural_key(p.name))
    return imgs, others


def _read(path: Path):
    """(image as decoded, None) or (None, why not): header checked first, library noise not shown."""
    from needletrack.io.folder import read_image_raw

    try:
        return read_image_raw(path), None
    except InputError as e:
        msg = str(e)
        prefix = f"{path}: "
        return None, (msg[len(prefix):] if msg.startswith(prefix) else msg)


def _sequence_dirs(root: Path) -> list[Path]:
    if (root / "frames").is_dir():
        return [root]
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: natural_key(p.name))


def validate_dataset(root) -> list[Problem]:
    """All problems found under ``root`` (a data set root, or one sequence folder)."""
    root = Path(root)
    if not root.exists():
        return [Problem(root, "no such folder")]
    if not root.is_dir():
        return [Problem(root, "not a folder")]
    seqs = _sequence_dirs(root)
    if not seqs:
        return [Problem(root, "no sequence folders inside (expected ROOT/<seq>/frames/00000.png ...)")]
    problems: list[Problem] = []
    for s in seqs:
        problems.extend(validate_sequence(s))
    return problems


def validate_sequence(seq: Path) -> list[Problem]:
    seq = Path(seq)
    out: list[Problem] = []
    fdir, mdir = seq / "frames", seq / "masks"
    if not fdir.is_dir():
        return [Problem(seq, "not a sequence folder: frames/ is missing")]
    frames, others = _images(fdir)
    for o in others:
        out.append(Problem(o, "not an image file (ignored)", "warning"))
    if not frames:
        out.append(Problem(fdir, "holds no images"))
        return out
    size0 = None
    sizes: dict[str, tuple[int, int]] = {}
    for p in frames:
        img, why = _read(p)
        if img is None:
            out.append(Problem(p, why))
            continue
        h, w = img.shape[:2]
        sizes[p.stem] = (h, w)
        if size0 is None:
            size0 = (h, w, p.name)
        elif (h, w) != size0[:2]:
            out.append(Problem(p, f"frame size {w}x{h} differs from the first frame's {size0[1]}x{size0[0]} "
                                  f"({size0[2]})"))
        if img.ndim == 3:
            out.append(Problem(p, f"frame has {img.shape[2]} channels, expected 8-bit grayscale "
                                  "(converted to gray when read)", "warning"))
        if img.dtype != np.uint8:
            out.append(Problem(p, f"frame is {img.dtype}, expected 8-bit (scaled to 8-bit when read)", "warning"))
    if not mdir.is_dir():
        out.append(Problem(seq, "masks/ is missing"))
    else:
        masks, others = _images(mdir)
        for o in others:
            out.append(Problem(o, "not an image file (ignored)", "warning"))
        mstems = {m.stem for m in masks}
        fstems = {p.stem for p in frames}
        missing = [p.name for p in frames if p.stem not in mstems]
        if missing:
            shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
            out.append(Problem(mdir, f"no mask for frames {shown}"))
        for m in masks:
            if m.stem not in fstems:
                out.append(Problem(m, "mask has no frame of the same name in frames/"))
                continue
            img, why = _read(m)
            if img is None:
                out.append(Problem(m, why.replace("cannot read image", "cannot read mask")))
                continue
            try:
                mb = binarize_mask(img)               # the one mask rule (needletrack.io.masks)
            except InputError as e:
                out.append(Problem(m, str(e)))
                continue
            h, w = img.shape[:2]
            if m.stem in sizes and (h, w) != sizes[m.stem]:
                fh, fw = sizes[m.stem]
                out.append(Problem(m, f"mask size {w}x{h} differs from its frame's {fw}x{fh}"))
            if img.ndim == 3 or img.dtype != np.uint8:
                out.append(Problem(m, f"mask is not 8-bit single-channel ({img.dtype}, "
                                      f"{img.shape[2] if img.ndim == 3 else 1} channel(s); converted when read)",
                                   "warning"))
            gray = img if img.ndim == 2 else img[:, :, :3].max(axis=2) if img.shape[2] >= 3 else img[:, :, 0]
            full = mask_range(gray)
            vals = np.unique(gray)
            bad = vals[(vals != 0) & (vals != full)]
            if bad.size:
                out.append(Problem(m, f"mask has values other than 0/{full:g} ({_fmt_vals(bad)}); read as "
                                      f"needle where above {full / 2:g}", "warning"))
            note = mask_warning(mb)
            if note:
                out.append(Problem(m, f"mask {note}", "warning"))
    out.extend(_check_meta(seq / "meta.json"))
    out.extend(_check_needle(seq / "needle.json", len(frames)))
    return out


def _fmt_vals(vals: np.ndarray) -> str:
    v = [f"{float(x):g}" for x in vals[:6]]
    return ", ".join(map(str, v)) + (", ..." if vals.size > 6 else "")


def _load_json(path: Path):
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError) as e:
        return None, Problem(path, f"invalid JSON ({e})")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_meta(path: Path) -> list[Problem]:
    if not path.exists():
        return []
    meta, err = _load_json(path)
    if err:
        return [err]
    if not isinstance(meta, dict):
        return [Problem(path, "must hold a JSON object")]
    out = []
    fps = meta.get("fps")
    if fps is not None and not (_number(fps) and fps > 0):
        out.append(Problem(path, f"fps must be a positive number, got {fps!r}"))
    sp = meta.get("pixel_spacing_mm")
    if sp is not None and not (isinstance(sp, list) and len(sp) == 2 and all(_number(v) and v > 0 for v in sp)):
        out.append(Problem(path, f"pixel_spacing_mm must be [row_mm, col_mm] (positive numbers), got {sp!r}"))
    es = meta.get("entry_side")
    if es is not None and es not in ("left", "right", "top"):
        out.append(Problem(path, f"entry_side must be left, right or top, got {es!r}"))
    return out


def _check_needle(path: Path, n_frames: int) -> list[Problem]:
    if not path.exists():
        return []
    data, err = _load_json(path)
    if err:
        return [err]
    if not isinstance(data, list):
        return [Problem(path, "must hold a JSON list (one entry per frame)")]
    out = []
    if len(data) != n_frames:
        out.append(Problem(path, f"has {len(data)} entries for {n_frames} frames"))
    for i, e in enumerate(data):
        if not isinstance(e, dict):
            out.append(Problem(path, f"entry {i} is not an object"))
            break
        miss = [k for k in NEEDLE_KEYS if k not in e]
        if miss:
            out.append(Problem(path, f"entry {i} lacks {', '.join(miss)}"))
            break
    return out
