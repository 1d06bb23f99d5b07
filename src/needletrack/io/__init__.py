"""Cine readers behind one streaming entry point, and mask I/O.

    from needletrack.io import open_cine
    with open_cine("loop.dcm") as cine:          # or .mp4/.avi/.mkv, an image folder, .mha/.igs.mha
        print(cine.frames, cine.width, cine.height, cine.fps, cine.pixel_spacing_mm)
        for image, time_s in cine:                # H×W uint8 (H×W×3 RGB with rgb=True), seconds or None
            ...

Readers decode one frame at a time; none holds the whole cine in memory.
"""
from __future__ import annotations

from pathlib import Path

from needletrack.errors import InputError
from needletrack.io.base import Cine

__all__ = ["Cine", "open_cine", "detect_format", "read_mask", "write_mask"]

SUPPORTED = "video (.mp4 .avi .mkv .mov), DICOM (.dcm or a DICOM file), an image folder, PLUS .mha/.igs.mha"


def detect_format(path) -> str:
    """``"folder"``, ``"video"``, ``"dicom"`` or ``"mha"``; raises InputError for a missing or unknown input."""
    from needletrack.io.dicom import is_dicom_file
    from needletrack.io.mha import MHA_SUFFIXES
    from needletrack.io.video import VIDEO_EXTS

    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", p)
    if p.is_dir():
        return "folder"
    ext = p.suffix.lower()
    if ext in VIDEO_EXTS:
        return "video"
    if ext in MHA_SUFFIXES:
        return "mha"
    if ext in (".dcm", ".dicom", ".dic") or is_dicom_file(p):
        return "dicom"
    if ext == "" or ext.lstrip(".").isdigit():  # scanners often write DICOM without the preamble/extension
        try:
            import pydicom

            pydicom.dcmread(str(p), stop_before_pixels=True, force=False)
            return "dicom"
        except Exception:  # noqa: BLE001
            pass
    raise InputError(f"unknown input format '{ext or '(no extension)'}'; expected {SUPPORTED}", p)


def open_cine(path, rgb: bool = False) -> Cine:
    """Open a cine loop for streaming. See :class:`needletrack.io.base.Cine` for what it offers."""
    kind = detect_format(path)
    p = Path(path)
    if kind == "folder":
        from needletrack.io.folder import FolderCine

        return FolderCine(p, rgb)
    if kind == "video":
        from needletrack.io.video import VideoCine

        return VideoCine(p, rgb)
    if kind == "mha":
        from needletrack.io.mha import MhaCine

        return MhaCine(p, rgb)
    from needletrack.io.dicom import DicomCine

    return DicomCine(p, rgb)


def read_mask(path, shape=None):
    from needletrack.io.masks import read_mask as _rm

    return _rm(path, shape)


def write_mask(path, mask) -> None:
    from needletrack.io.masks import write_mask as _wm

    _wm(path, mask)
