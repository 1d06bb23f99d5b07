"""Frame normalisation for the tracker: any supported frame -> float32 H×W in [0, 1].

Documented handling (README "Tracking"):

- ``uint8``: divided by 255.
- ``uint16`` (16-bit scanners and DICOM): made 8-bit by the cine readers' rule,
  :func:`needletrack.io.pixels.to_u8` (``round(v * 255 / 65535)``: an array declares no bit depth), then
  divided by 255, so a 16-bit frame gives the model the same input through the Python API as through the
  command line. 12-bit data stored in 16 bits: scale them to the full 16-bit range first (``frame << 4``).
  (Before, the tracker took 4095 as the full scale when the first frame had no value above 4095; see
  ``needletrack.io.pixels`` for why the readers' rule won.)
- float (``float16/32/64``): NaN or inf is an error. Taken as [0, 1] if the first frame's maximum is at most
  1, else as 0..255; clipped to that range.
- other integer types, complex, bool: an error.
- shapes: H×W, H×W×1, H×W×3 (RGB, converted with ITU-R 601 luma), H×W×4 (alpha dropped). Anything else is
  an error. Frames smaller than 8 pixels on a side are an error.
"""
from __future__ import annotations

import numpy as np

from needletrack.errors import InputError
from needletrack.io.pixels import to_u8


def to_gray(frame, where: str = "frame") -> np.ndarray:
    """Collapse channels; returns a 2D array of the input's dtype (no scaling)."""
    a = np.asarray(frame)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        rgb = a[:, :, :3].astype(np.float32)
        g = rgb[:, :, 0] * 0.299 + rgb[:, :, 1] * 0.587 + rgb[:, :, 2] * 0.114
        if np.issubdtype(a.dtype, np.integer):
            g = np.clip(np.rint(g), 0, np.iinfo(a.dtype).max).astype(a.dtype)
        a = g.astype(a.dtype, copy=False)
    elif a.ndim != 2:
        raise InputError(f"frames must be H×W, H×W×1, H×W×3 or H×W×4; got shape {a.shape}", where)
    if min(a.shape) < 8:
        raise InputError(f"frame too small ({a.shape[1]}×{a.shape[0]} px)", where)
    return a


class FrameNormaliser:
    """Converts frames of one stream to float32 [0, 1]; the scale is fixed by the first frame."""

    def __init__(self):
        self.scale: float | None = None
        self.kind: str | None = None

    def reset(self) -> None:
        self.scale = None
        self.kind = None

    def __call__(self, frame, where: str = "frame") -> np.ndarray:
        a = to_gray(frame, where)
        dt = a.dtype
        if dt == np.uint8:
            kind, scale = "uint8", 255.0
        elif dt == np.uint16:
            kind, scale = "uint16", 255.0
            a = to_u8(a)   # the one 16-bit rule (needletrack.io.pixels), shared with the cine readers
        elif np.issubdtype(dt, np.floating):
            kind = "float"
            if not np.all(np.isfinite(a)):
                raise InputError("frame contains NaN or inf", where)
            scale = self.scale if self.kind == kind else (1.0 if float(a.max()) <= 1.0 else 255.0)
        else:
            raise InputError(f"unsupported frame type {dt} (use uint8, uint16 or float)", where)
        if self.kind is None:
            self.kind, self.scale = kind, scale
        elif kind != self.kind:
            raise InputError(f"frame type changed mid-stream ({self.kind} -> {kind})", where)
        out = a.astype(np.float32) / np.float32(scale)
        np.clip(out, 0.0, 1.0, out=out)
        return out


def to_float01(frame, where: str = "frame") -> np.ndarray:
    """One-off conversion (a fresh stream of one frame)."""
    return FrameNormaliser()(frame, where)
