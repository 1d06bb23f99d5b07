"""Pixel depth: the one rule that turns a frame of any integer depth into 8-bit.

Every cine reader (image folders, DICOM, MetaImage) and the tracker's frame normaliser
(``needletrack.track.frames``, so ``Tracker.step`` on a numpy frame) call :func:`to_u8`, so one frame gives
the same 8-bit image through the command line and through the Python API.

The rule, ``round(v * 255 / full_scale)``:

* ``full_scale`` is ``2**bits - 1`` when the data declare their bit depth (DICOM ``BitsStored``: a 12-bit
  DICOM is scaled by 4095);
* otherwise the full range of the type (65535 for ``uint16``). A 16-bit PNG or TIFF, a ``.mha`` or a numpy
  ``uint16`` array carries no bit depth, so 12-bit data stored in 16 bits without a declaration come out
  dark (at most 4095 * 255 / 65535 = 16): scale them up (``frame << 4``) or declare the depth.

Why this rule won over the tracker's former one (full scale 4095 when the stream's first frame had no value
above 4095, else 65535): it depends only on the declared format, never on the content, so a frame gives the
same image wherever it sits in the stream, a dark or blank first frame cannot fix a wrong scale for the
whole stream (every later bright frame clipped to white), and the readers, which the measured figures go
through, keep the output they always had.

Floats are taken as [0, 1] and scaled by 255; signed integers are clipped at 0; ``uint8`` passes unchanged.
"""
from __future__ import annotations

import numpy as np


def full_scale(dtype, bits: int | None = None) -> int:
    """The value that maps to 255: ``2**bits - 1`` when the bit depth is declared, else the type's maximum."""
    if bits is not None:
        return 2 ** int(bits) - 1
    return int(np.iinfo(dtype).max)


def to_u8(frame: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Integer or [0, 1] float image -> uint8 by ``round(v * 255 / full_scale)`` (module doc); any shape."""
    img = np.asarray(frame)
    if img.dtype == np.uint8:
        return img
    if np.issubdtype(img.dtype, np.floating):
        return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    scale = full_scale(img.dtype, bits)
    if np.issubdtype(img.dtype, np.signedinteger):
        img = np.clip(img, 0, None)
    out = img.astype(np.float32) * (255.0 / float(scale)) + 0.5
    return np.clip(out, 0, 255).astype(np.uint8)
