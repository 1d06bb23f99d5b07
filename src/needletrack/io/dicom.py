"""DICOM ultrasound (single- or multi-frame) via pydicom, one frame decoded at a time.

Pixel formats: MONOCHROME1/2 (8-16 bit, scaled to 8-bit by v * 255 / (2**BitsStored - 1); MONOCHROME1
inverted), RGB, YBR_FULL / YBR_FULL_422 (converted to RGB), native or compressed (JPEG baseline through
pylibjpeg or Pillow, whichever pydicom finds).
Timing: FrameTimeVector (ms between frames) > FrameTime (ms) > CineRate / RecommendedDisplayFrameRate (fps).
Pixel spacing: PhysicalDeltaY/X of the first spatial SequenceOfUltrasoundRegions item whose units are cm
(code 3), converted to mm; otherwise PixelSpacing / ImagerPixelSpacing (already mm, [row, col]).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from needletrack.errors import InputError
from needletrack.io.base import Cine
from needletrack.io.pixels import to_u8


def is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


class DicomCine(Cine):
    format = "dicom"

    def __init__(self, path: Path, rgb: bool = False):
        super().__init__(path, rgb)
        import pydicom
        from pydicom.errors import InvalidDicomError

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ds = pydicom.dcmread(str(path), defer_size="256 KB")
            except InvalidDicomError:
                raise InputError("not a DICOM file (no DICOM header / 'DICM' prefix)", path) from None
            except Exception as e:  # noqa: BLE001 - pydicom raises many kinds on truncated files
                raise InputError(f"truncated or corrupt DICOM ({type(e).__name__}: {_short(e)})", path) from None
        for w in caught:
            msg = str(w.message)
            if "End of file" in msg or "truncated" in msg.lower():
                raise InputError(f"truncated DICOM ({_short(msg)})", path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._read_header(ds, path)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - pydicom converts values lazily and raises many kinds
            raise InputError(f"corrupt DICOM header ({type(e).__name__}: {_short(e)})", path) from None
        self._finish_timing()

    def _read_header(self, ds, path) -> None:
        if not any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            if len(ds) == 0 or _ends_early(ds, path):   # cut inside its header: nothing but the file meta
                raise InputError("truncated or corrupt DICOM: the file ends before its pixel data", path)
            raise InputError("DICOM has no pixel data", path)
        try:
            self.height = int(ds.Rows)
            self.width = int(ds.Columns)
        except (AttributeError, TypeError, ValueError):
            raise InputError("DICOM lacks Rows/Columns", path) from None
        if self.height < 1 or self.width < 1:
            raise InputError(f"DICOM image size {self.width}x{self.height} is empty", path)
        self.frames = int(_float(ds.get("NumberOfFrames", 1)) or 1)
        if self.frames < 1:
            raise InputError(f"DICOM NumberOfFrames is {self.frames}", path)
        self._photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        self._bits_stored = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
        self._times = self._read_times(ds)
        self.pixel_spacing_mm = self._read_spacing(ds)
        ts = getattr(ds.file_meta, "TransferSyntaxUID", None) if hasattr(ds, "file_meta") else None
        self.transfer_syntax = str(ts.name) if ts is not None else "unknown"
        self.notes.append(f"transfer syntax {self.transfer_syntax}, {self._photometric}")
        if self._bits_stored > 8 and self._photometric.startswith("MONO"):
            self.notes.append(f"{self._bits_stored}-bit pixels scaled to 8-bit (v * 255 / {2**self._bits_stored - 1})")
        if self._photometric.startswith("YBR"):
            self.notes.append(f"{self._photometric} converted to RGB")
        self._check_pixel_length(ds)

    def _read_times(self, ds) -> list[float] | None:
        n = self.frames
        ftv = ds.get("FrameTimeVector")
        if ftv is not None:
            seq = ftv if isinstance(ftv, (list, tuple)) or type(ftv).__name__ == "MultiValue" else [ftv]
            try:
                vals = [float(v) for v in seq]
            except (TypeError, ValueError):
                vals = []
            if len(vals) == n:
                times = np.cumsum([0.0] + vals[1:]) / 1000.0
                if n > 1 and times[-1] > 0:
                    self.fps = (n - 1) / float(times[-1])
                return [float(t) for t in times]
            self.notes.append(f"FrameTimeVector has {len(vals)} values for {n} frames; ignored")
        ft = _float(ds.get("FrameTime"))
        if ft and ft > 0:
            self.fps = 1000.0 / ft
        else:
            for tag in ("CineRate", "RecommendedDisplayFrameRate"):
                r = _float(ds.get(tag))
                if r and r > 0:
                    self.fps = r
                    break
        if self.fps:
            return [i / self.fps for i in range(n)]
        return None

    @staticmethod
    def _read_spacing(ds) -> list[float] | None:
        regions = ds.get("SequenceOfUltrasoundRegions")
        if regions:
            items = list(regions)
            items.sort(key=lambda r: 0 if int(r.get("RegionSpatialFormat", 1) or 0) == 1 else 1)
            for r in items:
                ux, uy = r.get("PhysicalUnitsXDirection"), r.get("PhysicalUnitsYDirection")
                dx, dy = _float(r.get("PhysicalDeltaX")), _float(r.get("PhysicalDeltaY"))
                if ux == 3 and uy == 3 and dx and dy:
                    return [abs(dy) * 10.0, abs(dx) * 10.0]  # cm -> mm, [row, col]
        for tag in ("PixelSpacing", "ImagerPixelSpacing"):
            v = ds.get(tag)
            if v is not None:
                try:
                    sy, sx = (float(x) for x in v)
                    if sy > 0 and sx > 0:
                        return [sy, sx]
                except (TypeError, ValueError):
                    pass
        return None

    def _check_pixel_length(self, ds) -> None:
        """Native pixel data shorter than Rows*Columns*Samples*Frames means a truncated file."""
        try:
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                return
        except AttributeError:
            return
        elem = ds.get_item("PixelData")
        length = getattr(elem, "length", None)
        if length is None or length == 0xFFFFFFFF:
            return
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 8) or 8)
        need = self.height * self.width * spp * self.frames * bits // 8
        if length < need:
            raise InputError(f"truncated DICOM: pixel data has {length} bytes, {need} needed", self.path)
        try:
            size = self.path.stat().st_size
            if elem.value_tell + length > size:
                raise InputError(f"truncated DICOM: file ends inside the pixel data", self.path)
        except (AttributeError, TypeError):
            pass

    def __iter__(self):
        from pydicom.pixels import iter_pixels

        i = 0
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                it = iter_pixels(str(self.path))
            for arr in _quiet(it):
                img = self._to_u8(arr)
                t = self._times[i] if self._times is not None and i < len(self._times) else None
                i += 1
                yield self._out(img), t
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - decoder errors come in many types
            raise InputError(f"corrupt DICOM pixel data at frame {i} ({type(e).__name__}: {_short(e)})",
                             self.path) from None
        if i < self.frames:
            raise InputError(f"truncated DICOM: {i} of {self.frames} frames decoded", self.path)

    def _to_u8(self, arr: np.ndarray) -> np.ndarray:
        if arr.ndim == 3 and arr.shape[2] == 3:
            return to_u8(arr)
        img = arr if arr.ndim == 2 else arr[..., 0]
        if img.dtype != np.uint8:
            img = to_u8(img, bits=self._bits_stored)
        if self._photometric == "MONOCHROME1":
            img = 255 - img
        return img


def _ends_early(ds, path) -> bool:
    """Whether the file stops before its last element's value does (a DICOM cut off mid-element)."""
    try:
        last = ds[list(ds.keys())[-1]] if len(ds) else None
        size = Path(path).stat().st_size
        tell = getattr(last, "value_tell", None) if last is not None else None
        length = getattr(last, "length", None) if last is not None else None
        return tell is not None and length not in (None, 0xFFFFFFFF) and tell + length > size
    except Exception:  # noqa: BLE001 - a guess only; "no pixel data" is said otherwise
        return False


def _quiet(it):
    """Iterate ``it`` with warnings silenced (pydicom warns on odd but readable files)."""
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                v = next(it)
            except StopIteration:
                return
        yield v


def _short(e) -> str:
    s = str(e).strip().replace("\n", " ")
    return s[:160] if s else type(e).__name__
