"""What a web job tracks, checked before it becomes a job: the uploaded file (type, size, a zip of frames, a
readable cine within the server's limits) or the built-in simulated sample; and the first-frame prompt of a tracking run.

Uploads are validated with the same cine readers as the CLI (``needletrack.io.open_cine``), so the page and
``needletrack track`` accept the same files and give the same one-line messages. Every problem is an
``InputError``; :class:`needletrack.serve.jobs.JobManager` owns the job folders and the job places (``max_jobs``)
these run in.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np

from needletrack.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", "")
MHA_SUFFIXES = (".mha",)
ZIP_SUFFIXES = (".zip",)
ACCEPTED = ("video (.mp4 .avi .mov .mkv .webm), DICOM (.dcm or no extension), PLUS/MetaImage .mha or a .zip of "
            "frame images (.png .jpg .tif)")


def display_name(filename: str | None) -> str:
    """The user's file name, made safe to show and to use in messages."""
    name = os.path.basename((filename or "").replace("\\", "/")).strip()
    name = re.sub(r"[^\w.\- ()+,]", "_", name)[:120]
    return name or "upload"


def suffix_of(name: str) -> str:
    low = name.lower()
    if low.endswith(".igs.mha"):
        return ".mha"
    suf = Path(low).suffix
    return "" if suf.lstrip(".").isdigit() else suf


def check_upload_name(name: str) -> str:
    """The upload's suffix, or InputError when the file type is not accepted."""
    suffix = suffix_of(name)
    if name.lower().endswith(".mhd"):
        raise InputError("a .mhd header needs its separate pixel file; upload a single-file .mha instead", name)
    if suffix not in VIDEO_SUFFIXES + DICOM_SUFFIXES + MHA_SUFFIXES + ZIP_SUFFIXES:
        raise InputError(f"unsupported file type '{suffix}'; expected {ACCEPTED}", name)
    return suffix


def receive_upload(src, dest: Path, name: str, max_upload_bytes: int, max_upload_mb: float,
                   max_frames: int) -> tuple[Path, int]:
    """Store the upload (a path to move, or a binary file object to copy) at ``dest`` and check it before it
    is opened as a cine: not empty, within the size limit, a zip unpacked to a folder of frames, an .mha with
    its pixels inside. Returns (the path to read the cine from, size in bytes)."""
    suffix = suffix_of(name)
    if isinstance(src, (str, os.PathLike)):
        shutil.move(os.fspath(src), dest)
    else:
        with open(dest, "wb") as f:
            shutil.copyfileobj(src, f, 1 << 20)
    size = dest.stat().st_size
    if size == 0:
        raise InputError("the file is empty", name)
    if size > max_upload_bytes:
        raise InputError(f"the file is {size / 2**20:.1f} MB; the limit is {max_upload_mb:g} MB", name)
    path = dest
    if suffix == ".zip":
        path = unzip_frames(dest, dest.parent / "frames", name, max_upload_bytes, max_frames)
    if suffix in MHA_SUFFIXES:        # the pixels must be in the upload itself (ElementDataFile = LOCAL)
        from needletrack.io.mha import check_header

        check_header(dest, allow_data_file=False)
    return path, size


def unzip_frames(zpath: Path, folder: Path, name: str, max_upload_bytes: int, max_frames: int) -> Path:
    """Extract the frame images of a zip into one flat folder (zip-slip and zip-bomb safe); the frames are
    then read like an image folder (natural sort of the file names)."""
    from needletrack.io.folder import IMAGE_EXTS

    budget = 4 * max_upload_bytes          # uncompressed bytes allowed
    try:
        z = zipfile.ZipFile(zpath)
    except zipfile.BadZipFile:
        raise InputError("not a readable zip file", name) from None
    with z:
        members = []
        for info in z.infolist():
            base = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
            if info.is_dir() or not base or base.startswith(".") or "__MACOSX" in info.filename:
                continue
            if Path(base).suffix.lower() in IMAGE_EXTS:
                members.append((base, info))
        if not members:
            raise InputError(f"the zip holds no frame images ({', '.join(IMAGE_EXTS)})", name)
        if len(members) > max(max_frames, 1) * 4:
            raise InputError(f"the zip holds {len(members)} images; the limit is {max_frames * 4}", name)
        seen: set[str] = set()
        total = 0
        folder.mkdir()
        for base, info in members:
            if base in seen:
                raise InputError(f"two images are named {base} (in different folders of the zip)", name)
            seen.add(base)
            total += info.file_size
            if total > budget:
                raise InputError(f"the zip unpacks to more than {budget / 2**20:.0f} MB", name)
            with z.open(info) as src, open(folder / base, "wb") as dst:
                left = budget - (total - info.file_size)
                while True:                       # never trust the declared size alone
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    left -= len(chunk)
                    if left < 0:
                        raise InputError(f"the zip unpacks to more than {budget / 2**20:.0f} MB", name)
                    dst.write(chunk)
    zpath.unlink()
    return folder


def probe(input_path: Path, name: str, out_dir: Path, max_side_px: int, max_frames: int) -> tuple[dict, list]:
    """Open the cine like `needletrack track` would, check limits, save the first frame as out_dir/frame0.png.
    Returns (info, notes for the job)."""
    from needletrack.io import open_cine
    from needletrack.utils import write_png_atomic

    cine = open_cine(input_path)
    with cine:
        w, h = int(cine.width), int(cine.height)
        if max(w, h) > max_side_px:
            raise InputError(f"frames are {w}×{h} px; the limit is {max_side_px} px a side", name)
        first = None
        for image, _t in cine:
            first = image
            break
        if first is None:
            raise InputError("the cine has no frames", name)
        write_png_atomic(out_dir / "frame0.png", np.ascontiguousarray(first))
        frames = int(cine.frames) if cine.frames else None
        fps = float(cine.fps) if cine.fps else None
        info = {"format": cine.format, "frames": frames, "width": w, "height": h, "fps": fps,
                "duration_s": getattr(cine, "duration", None),
                "pixel_spacing_mm": getattr(cine, "pixel_spacing_mm", None),
                "notes": list(getattr(cine, "notes", []) or [])}
    notes = []
    if frames and frames > max_frames:
        notes.append(f"only the first {max_frames} of {frames} frames will be tracked (server limit)")
    return info, notes


def check_sample_args(frames: int | None, size: int | None, default_frames: int, tracker_size) -> tuple[int, int]:
    """(frames, size) of a sample request, or InputError. ``tracker_size()``: the model's input side, asked
    only when no size is given (clamped to 64..512; 256 when it cannot be told)."""
    n = int(frames or default_frames)
    if not 2 <= n <= 300:
        raise InputError("the sample needs 2..300 frames")
    if size is None:
        try:
            size = int(tracker_size())
        except Exception:  # noqa: BLE001
            size = 256
        size = int(min(512, max(64, size)))
    if not 32 <= int(size) <= 1024:
        raise InputError("the sample size must be 32..1024 px")
    return n, size


def write_sample(d: Path, n: int, size: int, preset: str, seed: int):
    """Simulate a needle insertion into the sequence folder d/sample; returns (sequence, seed used). The prompt
    needs a needle on the first frame: a seed whose insertion starts off-screen gives way to the next one."""
    from needletrack.data.folder import SequenceWriter, read_sequence
    from needletrack.sim import simulate_sequence

    for seed in range(int(seed), int(seed) + 20):
        it = simulate_sequence(n, int(size), preset, seed)
        gen = iter(it)
        first = next(gen)
        if first[2].get("visible") and int(np.count_nonzero(first[1])) >= 20:
            break
    meta = dict(getattr(it, "meta", {}) or {})
    meta["source"] = f"needletrack.sim preset={preset} seed={seed}"
    w = SequenceWriter(d, "sample", meta)
    w.add(*first)
    for frame, mask, needle in gen:
        w.add(frame, mask, needle)
    w.close()
    return read_sequence(d / "sample"), seed


def suggested_line(needle0: dict, w: int, h: int) -> list | None:
    """The simulator's shaft on frame 0 (x0, y0, x1, y1), clamped into the image (the shaft may enter from
    just outside it); None when frame 0 shows no needle."""
    if not (needle0.get("visible") and needle0.get("tip") and needle0.get("tail")):
        return None
    x0, y0, x1, y1 = (float(v) for v in (*needle0["tail"], *needle0["tip"]))
    return [round(min(max(x, 0.0), w - 1.0), 1) if k % 2 == 0 else
            round(min(max(x, 0.0), h - 1.0), 1) for k, x in enumerate((x0, y0, x1, y1))]


def check_prompt(prompt: dict, info: dict, gt) -> dict:
    """A tracking run's first-frame prompt, checked against the job's first frame (``info``: width, height) and
    normalised: {"mode": "line", "line": [x0, y0, x1, y1]} | {"mode": "auto"} | {"mode": "truth"} (only with a
    ground truth ``gt``: the simulated sample). InputError otherwise."""
    mode = prompt.get("mode")
    if mode == "line":
        line = [float(v) for v in prompt.get("line") or []]
        w, h = info.get("width"), info.get("height")
        if len(line) != 4 or not all(math.isfinite(v) for v in line):
            raise InputError("the line needs four finite numbers x0, y0, x1, y1 (pixels)")
        if not (all(0 <= x <= w - 1 for x in line[0::2]) and all(0 <= y <= h - 1 for y in line[1::2])):
            raise InputError(f"the line ({', '.join(f'{v:g}' for v in line)}) lies outside the "
                             f"{w}×{h} first frame")
        if math.hypot(line[2] - line[0], line[3] - line[1]) < 3:
            raise InputError("the line is shorter than 3 px: draw it along the needle shaft")
        return {"mode": "line", "line": line}
    if mode == "auto":
        return {"mode": "auto"}
    if mode == "truth":
        if gt is None:
            raise InputError("mode 'truth' is only for the simulated sample (it has a ground truth)")
        if not gt(0).any():
            raise InputError("the sample's first frame has no needle; use 'auto'")
        return {"mode": "truth"}
    raise InputError(f"unknown prompt mode {mode!r}; expected 'line', 'auto' or 'truth'")
