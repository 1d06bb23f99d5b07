"""PLUS sequence files (``.mha`` / ``.igs.mha``, also ``.mhd``) via SimpleITK, one frame extracted at a time.

Per-frame timestamps come from the ``Seq_Frame####_Timestamp`` header fields (seconds; reported relative to
the first frame, the original first stamp is kept in ``time_offset_s``); fps = (n - 1) / (last - first).
Without timestamps the cine has no timing. PLUS writes ``ElementSpacing = 1 1 1`` (the calibration lives in
its transforms), so a unit spacing is reported as unknown; any other ElementSpacing is taken as mm.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from needletrack.errors import InputError
from needletrack.io.base import Cine, scale_to_u8

MHA_SUFFIXES = (".mha", ".mhd")
_TS = re.compile(r"^Seq_Frame(\d+)_Timestamp$")


class MhaCine(Cine):
    format = "mha"

    def __init__(self, path: Path, rgb: bool = False):
        super().__init__(path, rgb)
        import SimpleITK as sitk

        r = sitk.ImageFileReader()
        r.SetFileName(str(path))
        try:
            r.ReadImageInformation()
        except RuntimeError as e:
            raise InputError(f"not a readable MetaImage ({_first_line(e)})", path) from None
        size = r.GetSize()
        dim = r.GetDimension()
        if dim not in (2, 3):
            raise InputError(f"expected a 2D image or a 3D sequence, got {dim} dimensions", path)
        self.width, self.height = int(size[0]), int(size[1])
        self.frames = int(size[2]) if dim == 3 else 1
        self._dim = dim
        self._channels = int(r.GetNumberOfComponents())
        if self.frames <= 0 or self.width <= 0 or self.height <= 0:
            raise InputError("sequence holds no frames", path)
        sp = r.GetSpacing()
        if not (abs(sp[0] - 1.0) < 1e-9 and abs(sp[1] - 1.0) < 1e-9):
            self.pixel_spacing_mm = [float(sp[1]), float(sp[0])]
        stamps = {}
        for k in r.GetMetaDataKeys():
            m = _TS.match(k)
            if m:
                try:
                    stamps[int(m.group(1))] = float(r.GetMetaData(k))
                except ValueError:
                    raise InputError(f"bad timestamp {k} = {r.GetMetaData(k)!r}", path) from None
        self.time_offset_s = None
        self._times = None
        if stamps:
            if len(stamps) != self.frames or set(stamps) != set(range(self.frames)):
                self.notes.append(f"{len(stamps)} frame timestamps for {self.frames} frames; timing ignored")
            else:
                t = np.array([stamps[i] for i in range(self.frames)])
                self.time_offset_s = float(t[0])
                self._times = [float(v) for v in t - t[0]]
                if self.frames > 1 and t[-1] > t[0]:
                    self.fps = (self.frames - 1) / float(t[-1] - t[0])
                    self.duration = self.frames / self.fps
        self._finish_timing()

    def __iter__(self):
        import SimpleITK as sitk

        r = sitk.ImageFileReader()
        r.SetFileName(str(self.path))
        for i in range(self.frames):
            try:
                if self._dim == 3:
                    r.SetExtractIndex([0, 0, i])
                    r.SetExtractSize([self.width, self.height, 0])
                img = sitk.GetArrayFromImage(r.Execute())
            except RuntimeError as e:
                raise InputError(f"truncated or corrupt pixel data at frame {i} ({_first_line(e)})",
                                 self.path) from None
            if img.ndim == 3 and img.shape[0] == 1 and self._channels == 1:
                img = img[0]
            img = scale_to_u8(img)
            t = self._times[i] if self._times is not None else None
            yield self._out(img), t


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    msg = next((ln for ln in lines if "Description" in ln), lines[-1] if lines else type(e).__name__)
    return msg[:160]
