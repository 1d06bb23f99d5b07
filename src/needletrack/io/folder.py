"""Image folders: one image per frame, natural sort (f2 < f10).

8- or 16-bit, grayscale or RGB(A). 16-bit frames are scaled to 8-bit by the fixed rule
``round(v * 255 / 65535)`` of :mod:`needletrack.io.pixels` (a PNG/TIFF declares no bit depth; the same
rule as the tracker's, and the same for every frame, so brightness does not flicker). A data set sequence
folder (``<seq>/frames/``) may be given as ``<seq>`` or ``<seq>/frames``; fps and pixel spacing then come
from its ``meta.json``. Other folders have no timing (fps None, time_s None).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from needletrack.errors import InputError
from needletrack.io.base import Cine
from needletrack.io.pixels import to_u8
from needletrack.io.spacing import parse_spacing
from needletrack.utils import natural_key

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_IMAGE_SIDE = 16384             # no ultrasound frame or mask is larger; a header claiming more is refused
MAX_IMAGE_PIXELS = 8192 * 8192     # before anything is decoded (a 100000x100000 PNG is a few hundred bytes)


def list_images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")),
                  key=lambda p: natural_key(p.name))


def image_header(path) -> tuple[int, int, str]:
    """(width, height, PIL mode) from the file's header only, nothing decoded. Raises InputError for a file
    that is not an image, or whose header claims more than MAX_IMAGE_SIDE / MAX_IMAGE_PIXELS."""
    import warnings

    from PIL import Image

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # Pillow's DecompressionBombWarning and friends
            with Image.open(path) as im:
                (w, h), mode = im.size, im.mode
    except Image.DecompressionBombError as e:
        import re

        m = re.search(r"\((\d+) pixels\)", str(e))
        claim = f"{m.group(1)} pixels" if m else f"more than {MAX_IMAGE_PIXELS} pixels"
        raise InputError(f"image header claims {claim}, over the limit of {MAX_IMAGE_PIXELS}; refused before "
                         "decoding (corrupt, or not a frame)", path) from None
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except IsADirectoryError:
        raise InputError("is a folder, not an image file", path) from None
    except Exception as e:  # noqa: BLE001 - Pillow's plugins raise many kinds on a bad header
        raise InputError(f"cannot read image (truncated, corrupt or not an image: {type(e).__name__})",
                         path) from None
    if w < 1 or h < 1 or w > MAX_IMAGE_SIDE or h > MAX_IMAGE_SIDE or w * h > MAX_IMAGE_PIXELS:
        raise InputError(f"image header claims {w}x{h} pixels, over the limit ({MAX_IMAGE_SIDE} px a side, "
                         f"{MAX_IMAGE_PIXELS} pixels); refused before decoding", path)
    return int(w), int(h), str(mode)


def read_image_raw(path) -> np.ndarray:
    """One image file as OpenCV decodes it (any depth, BGR(A) channel order), after the header check; what
    libpng/libtiff print about a bad file is not shown. InputError if it does not decode."""
    import cv2

    from needletrack.utils import quiet_native_stderr

    path = Path(path)
    image_header(path)
    with quiet_native_stderr():
        try:
            img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            img = None
    if img is None or img.size == 0:
        raise InputError("cannot read image (truncated, corrupt or not an image)", path)
    return img


def read_image_u8(path: Path, rgb: bool = False) -> np.ndarray:
    """One image file -> uint8 (H×W gray, or H×W×3 RGB when ``rgb``); 16-bit scaled by v*255/65535."""
    import cv2

    img = read_image_raw(path)
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        elif img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        else:
            img = img[:, :, 0]
    img = to_u8(img)
    if rgb:
        return img if img.ndim == 3 else np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return img


def _check_inside(path: Path) -> None:
    """Refuse a file that is a link leading out of its own folder."""
    if path.is_symlink() and path.resolve().parent != path.parent.resolve():
        raise InputError("is a link that leads out of the folder; only files in the folder are read", path)


class FolderCine(Cine):
    format = "folder"

    def __init__(self, path: Path, rgb: bool = False):
        super().__init__(path, rgb)
        folder = Path(path)
        meta_dir = None
        if (folder / "frames").is_dir():
            meta_dir, folder = folder, folder / "frames"
        elif folder.name == "frames" and (folder.parent / "masks").is_dir():
            meta_dir = folder.parent
        self.folder = folder
        self._paths = list_images(folder)
        if not self._paths:
            raise InputError("folder holds no images (.png .jpg .bmp .tif)", folder)
        for p in self._paths:
            _check_inside(p)
        self.names = [p.name for p in self._paths]
        self.frames = len(self._paths)
        self._check_sizes()
        if meta_dir is not None:
            self._read_meta(meta_dir / "meta.json")
        self._finish_timing()

    def _check_sizes(self) -> None:
        """Header-only pass (PIL opens lazily): every frame must have the first frame's size."""
        size0 = None
        sixteen = False
        for p in self._paths:
            w, h, mode = image_header(p)
            size = (w, h)
            if size0 is None:
                size0 = size
                self.width, self.height = int(size[0]), int(size[1])
            elif size != size0:
                raise InputError(f"frame size {size[0]}x{size[1]} differs from the first frame's "
                                 f"{size0[0]}x{size0[1]} ({self._paths[0].name})", p)
            sixteen = sixteen or mode.startswith("I;16") or mode == "I"
        if sixteen:
            self.notes.append("16-bit frames scaled to 8-bit (v * 255 / 65535)")

    def _read_meta(self, meta_path: Path) -> None:
        if not meta_path.exists():
            return
        _check_inside(meta_path)
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"invalid JSON ({e})", meta_path) from None
        if not isinstance(meta, dict):
            raise InputError("meta.json must hold an object", meta_path)
        fps = meta.get("fps")
        if isinstance(fps, (int, float)) and not isinstance(fps, bool) and fps > 0:
            self.fps = float(fps)
        sp = meta.get("pixel_spacing_mm")
        if sp is not None:
            self.pixel_spacing_mm = list(parse_spacing(sp, meta_path))

    def __iter__(self):
        for i, p in enumerate(self._paths):
            img = read_image_u8(p, rgb=self.rgb)
            if img.shape[0] != self.height or img.shape[1] != self.width:
                raise InputError(f"frame size {img.shape[1]}x{img.shape[0]} differs from the first frame's "
                                 f"{self.width}x{self.height}", p)
            yield img, (i / self.fps if self.fps else None)
