"""PLUS sequence files (``.mha`` / ``.igs.mha``, also ``.mhd``) via SimpleITK, one frame extracted at a time.

Per-frame timestamps come from the ``Seq_Frame####_Timestamp`` header fields (seconds; reported relative to
the first frame, the original first stamp is kept in ``time_offset_s``); fps = (n - 1) / (last - first).
Without timestamps the cine has no timing. PLUS writes ``ElementSpacing = 1 1 1`` (the calibration lives in
its transforms), so a unit spacing is reported as unknown; any other ElementSpacing is taken as mm.

Where the pixels are (``ElementDataFile``) is checked here, before SimpleITK reads anything, and only the
MetaImage reader of ITK is used (never one picked from the file's content):

* ``LOCAL``: the pixels follow the header in the same file (always allowed);
* one relative file name in the header's own folder (the ordinary ``.mhd`` + ``.raw`` pair), when
  ``allow_data_file`` (local files; never for uploads to ``serve-web``);
* refused: an absolute path, any folder part (``/``, ``\\``, ``..``), a ``LIST`` of files, a ``%d`` file
  pattern, a data file that is a link leading out of the folder, control characters.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from needletrack.errors import InputError
from needletrack.io.base import Cine
from needletrack.io.pixels import to_u8
from needletrack.utils import quiet_native_stderr

MHA_SUFFIXES = (".mha", ".mhd")
_TS = re.compile(r"^Seq_Frame(\d+)_Timestamp$")
_LOCAL = ("LOCAL", "Local", "local")          # the spellings MetaIO takes for "pixels in this file"
_DATA_KEY = b"elementdatafile"
_DATA_LINE = re.compile(r"^[ \t]*ElementDataFile[ \t]*[=:][ \t]*(.*?)[ \t]*$")
_MAX_HEADER_BYTES = 256 * 2**20               # PLUS headers list every frame's fields, but not this many
_MAX_LINE_BYTES = 2**20                       # nor lines this long


def check_header(path, allow_data_file: bool = True) -> str | None:
    """Check a MetaImage header's ``ElementDataFile`` before ITK reads it. Returns None for ``LOCAL`` data or
    the data file's path (in the header's folder); raises InputError for anything that points elsewhere.

    The decisive line is the first one that mentions ``ElementDataFile`` in any case (MetaIO stops reading the
    header at that field); it must be exactly ``ElementDataFile = VALUE`` (``=`` or ``:``), in plain text."""
    path = Path(path)
    line, again = _find_data_line(path)
    if line is None:
        raise InputError("not a MetaImage header: no ElementDataFile field", path)
    if again:
        raise InputError("ElementDataFile appears more than once", path)
    if line.endswith(b"\r"):
        line = line[:-1]
    text = line.decode("latin-1")
    if any(ord(ch) < 32 and ch != "\t" or ord(ch) == 127 for ch in text):
        raise InputError("the ElementDataFile line holds control characters", path)
    m = _DATA_LINE.match(text)
    if m is None:
        raise InputError(f"unreadable ElementDataFile line {text.strip()[:80]!r}", path)
    value = m.group(1)
    if value in _LOCAL:
        return None
    shown = value[:80]
    if not allow_data_file:
        raise InputError(f"the header names a separate pixel file ({shown!r}); only a single-file .mha with "
                         "ElementDataFile = LOCAL is accepted here", path)
    if value.upper().startswith("LIST"):
        raise InputError("ElementDataFile = LIST (pixels spread over listed files) is not supported", path)
    if "%" in value:
        raise InputError(f"ElementDataFile {shown!r} is a file-name pattern; only one pixel file beside the "
                         "header is supported", path)
    if (not value or value in (".", "..") or any(c in value for c in "/\\:")
            or Path(value).is_absolute()):
        raise InputError(f"ElementDataFile {shown!r} must be a file name in the header's own folder "
                         "(no absolute path, no folder part, no '..')", path)
    folder = path.parent.resolve()
    data = folder / value
    if not data.is_file():
        raise InputError(f"the pixel file {value!r} named by ElementDataFile is missing", path)
    if data.resolve().parent != folder:
        raise InputError(f"the pixel file {value!r} is a link that leads out of the header's folder", path)
    return str(data)


def _find_data_line(path: Path) -> tuple[bytes | None, bool]:
    """(the first header line, split at LF, that mentions ElementDataFile in any case, or None;
    whether ``ElementDataFile`` appears again anywhere after it). Streams the file, bounded memory."""
    key = b"ElementDataFile"
    try:
        with open(path, "rb") as f:
            pending = b""
            total = 0
            line = None
            while line is None:
                chunk = f.read(1 << 16)
                total += len(chunk)
                if not chunk:
                    return (pending if _DATA_KEY in pending.lower() else None), False
                pending += chunk
                start = 0
                while True:
                    nl = pending.find(b"\n", start)
                    if nl < 0:
                        break
                    if _DATA_KEY in pending[start:nl].lower():
                        line = pending[start:nl]
                        pending = pending[nl + 1:]
                        break
                    start = nl + 1
                if line is None:
                    pending = pending[start:]
                    if len(pending) > _MAX_LINE_BYTES or total > _MAX_HEADER_BYTES:
                        return (pending if _DATA_KEY in pending.lower() else None), False
            # the rest (pixels, for LOCAL): a second ElementDataFile there could only be meant for a reader that
            # lost its place in the header
            tail = pending
            while True:
                if key in tail:
                    return line, True
                chunk = f.read(1 << 20)
                if not chunk:
                    return line, False
                tail = tail[-(len(key) - 1):] + chunk
    except OSError as e:
        raise InputError(f"cannot read ({e.strerror or e})", path) from None


class MhaCine(Cine):
    format = "mha"

    def __init__(self, path: Path, rgb: bool = False, allow_data_file: bool = True):
        super().__init__(path, rgb)
        import SimpleITK as sitk

        check_header(path, allow_data_file)
        r = _reader(sitk, path)
        try:
            with quiet_native_stderr():          # MetaIO prints its complaints before raising
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

        r = _reader(sitk, self.path)
        for i in range(self.frames):
            try:
                if self._dim == 3:
                    r.SetExtractIndex([0, 0, i])
                    r.SetExtractSize([self.width, self.height, 0])
                with quiet_native_stderr():
                    img = sitk.GetArrayFromImage(r.Execute())
            except RuntimeError as e:
                raise InputError(f"truncated or corrupt pixel data at frame {i} ({_first_line(e)})",
                                 self.path) from None
            if img.ndim == 3 and img.shape[0] == 1 and self._channels == 1:
                img = img[0]
            img = to_u8(img)
            t = self._times[i] if self._times is not None else None
            yield self._out(img), t


def _reader(sitk, path):
    """A SimpleITK reader that uses ITK's MetaImage reader only (not one guessed from the file's content)."""
    r = sitk.ImageFileReader()
    r.SetImageIO("MetaImageIO")
    r.SetFileName(str(path))
    return r


def _first_line(e: Exception) -> str:
    # ITK adds the C library's last errno text ("Reason: No such file or directory" for a file that exists
    # but is corrupt, "Reason: Success"), unrelated to the problem: dropped, like the source-file location
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Reason:", "Exception thrown in"))]
    msg = next((ln for ln in lines if "Description" in ln), lines[-1] if lines else "")
    msg = re.sub(r"\s*\(?Reason: [^)]*\)?\s*$", "", msg)
    msg = re.sub(r"^.*?Description:\s*", "", msg)
    msg = re.sub(r"^ITK ERROR: \w+\(0x[0-9a-fA-F]+\):\s*", "", msg).strip()
    return (msg or "corrupt file")[:160]
