"""Small shared helpers: atomic writes, natural sort, JSON."""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Iterator

_QUIET_LOCK = threading.Lock()
_QUIET_STATE = {"depth": 0, "saved": None}


def natural_key(s: str | os.PathLike) -> list:
    """Sort key so that 'f2' < 'f10'."""
    name = os.fspath(s)
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Discard what C libraries (libpng, libtiff, OpenCV, ITK, FFmpeg) write straight to file descriptor 2
    while the block runs, so a bad input gives the CLI's one-line error and nothing else. Python's own
    ``sys.stderr`` output is flushed first and not affected outside the block. Nested and concurrent uses
    share one redirection (the last one out restores fd 2). ``NEEDLETRACK_DEBUG=1`` turns it off."""
    if os.environ.get("NEEDLETRACK_DEBUG"):
        yield
        return
    import sys

    with _QUIET_LOCK:
        if _QUIET_STATE["depth"] == 0:
            try:
                sys.stderr.flush()
            except Exception:  # noqa: BLE001
                pass
            try:
                saved = os.dup(2)
                devnull = os.open(os.devnull, os.O_WRONLY)
            except OSError:
                saved = None
            else:
                os.dup2(devnull, 2)
                os.close(devnull)
            _QUIET_STATE["saved"] = saved
        _QUIET_STATE["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET_STATE["depth"] -= 1
            if _QUIET_STATE["depth"] == 0 and _QUIET_STATE["saved"] is not None:
                os.dup2(_QUIET_STATE["saved"], 2)
                os.close(_QUIET_STATE["saved"])
                _QUIET_STATE["saved"] = None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the real extension (``suffix`` overrides) so writers that infer the format
    from the name (OpenCV, PyAV) still work. On failure the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = suffix if suffix is not None else path.suffix
    # the writer's pid is in the name, so that a later run can tell a killed writer's leftovers from a live one's
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}-", suffix=f".partial{ext}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give the result the usual permissions
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_png_atomic(path: str | os.PathLike, image) -> None:
    """Write a uint8/uint16 image as PNG atomically."""
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"could not encode PNG for {path}")
    write_bytes_atomic(path, buf.tobytes())


def check_device(name) -> str:
    """A torch device name the user gave (``--device``): NeedletrackError (one line, exit 2) for a name that
    is not a device, a CUDA device on a machine without CUDA, or a CUDA index past the last GPU."""
    from needletrack.errors import NeedletrackError

    text = str(name).strip()
    try:
        import torch
    except ImportError:
        if text == "cpu":
            return text
        raise NeedletrackError(f"--device {text}: PyTorch is not installed (only cpu is possible)") from None
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise NeedletrackError(f"--device {text!r} is not a device (cpu, cuda, cuda:N)") from None
    if dev.type == "cpu":
        return text
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NeedletrackError(f"--device {text}: CUDA is not available on this machine (use --device cpu)")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise NeedletrackError(f"--device {text}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
        return text
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise NeedletrackError(f"--device {text}: MPS is not available on this machine (use --device cpu)")
        return text
    raise NeedletrackError(f"--device {text}: device type {dev.type!r} is not supported (cpu, cuda, cuda:N)")


def prepare_out_dir(path, flag: str = "--out") -> list[Path]:
    """Create the output folder ``path`` (and missing parents) after checking that it can be: not a file,
    no file in its way, writable. Returns the folders it created, outermost first (so that a failed first
    run can remove them again with :func:`remove_created_dirs`). NeedletrackError (exit 2) otherwise."""
    from needletrack.errors import NeedletrackError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise NeedletrackError(f"{flag} {p}: exists and is not a folder")
    created: list[Path] = []
    q = p
    while not q.exists():
        created.append(q)
        if q.parent == q:
            break
        q = q.parent
    if not q.is_dir():
        raise NeedletrackError(f"{flag} {p}: {q} is a file, not a folder")
    created.reverse()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        remove_created_dirs(created)
        raise NeedletrackError(f"{flag} {p}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(p, os.W_OK | os.X_OK):
        remove_created_dirs(created)
        raise NeedletrackError(f"{flag} {p}: the folder is not writable")
    return created


def remove_created_dirs(created: list[Path]) -> None:
    """Remove folders made by :func:`prepare_out_dir` again, innermost first, where they are still empty."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            break


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (ours included)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def check_out_file(path, flag: str) -> Path:
    """An output file the user named (``--json OUT``): NeedletrackError (exit 2) when it is a folder or a
    file stands where its folder should be; checked before any work is done."""
    from needletrack.errors import NeedletrackError

    p = Path(path)
    if p.is_dir():
        raise NeedletrackError(f"{flag} {p}: is a folder; give a file name")
    q = p.parent
    while not q.exists() and q.parent != q:
        q = q.parent
    if q.exists() and not q.is_dir():
        raise NeedletrackError(f"{flag} {p}: {q} is a file, not a folder")
    return p
