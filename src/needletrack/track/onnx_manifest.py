"""The manifest of an ONNX export and the checksums it holds (split from ``onnx_export.py``).

``manifest.json`` (its fields are in ``onnx_export.py``) records every graph's sha256 and the source weights'
sha256; :func:`check_export` tells an intact export from a corrupt or stale one. Also here: which paths name an
export folder, and the record of a failed export (``<folder>.failed.json``) that lets later runs fail at once.
Nothing here imports torch at module level.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from needletrack.errors import InputError

EXPORT_FORMAT = 1          # bump when the graphs' interface changes: older caches become stale
MANIFEST = "manifest.json"
KEY_GRAPHS = ("key", "value", "read", "decoder")


# --------------------------------------------------------------------------------------------------------
# checksums and locations
# --------------------------------------------------------------------------------------------------------
def file_sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def model_sha256(model) -> str:
    """A checksum of an in-memory model: its config and every state-dict tensor's bytes."""
    h = hashlib.sha256()
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        h.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------------
# manifest checks
# --------------------------------------------------------------------------------------------------------
def read_manifest(folder) -> dict:
    folder = Path(folder)
    p = folder / MANIFEST
    if not p.is_file():
        raise InputError(f"no {MANIFEST} (not a needletrack ONNX export; run `needletrack export-onnx`)", folder)
    try:
        man = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"unreadable manifest ({type(e).__name__}: {e}); re-run `needletrack export-onnx`",
                         p) from None
    if not isinstance(man, dict) or "graphs" not in man:
        raise InputError("manifest has no 'graphs'; re-run `needletrack export-onnx`", p)
    return man


def check_export(folder, source_sha256: str | None = None, input_hw=None, variant: str = "fp32") -> dict:
    """The folder's manifest if its graphs are intact and match; else raise InputError saying why.

    Checks: export format, every graph file of ``variant`` present with the sha256 in the manifest (corrupt),
    and when given, the source weights' checksum and the input size (stale).
    """
    folder = Path(folder)
    man = read_manifest(folder)
    again = "re-run `needletrack export-onnx`"
    if man.get("format") != EXPORT_FORMAT:
        raise InputError(f"stale export: format {man.get('format')!r}, this needletrack writes "
                         f"{EXPORT_FORMAT}; {again}", folder)
    if source_sha256 is not None and man.get("source_sha256") != source_sha256:
        raise InputError(f"stale export: made from weights with sha256 {str(man.get('source_sha256'))[:16]}…, "
                         f"but the weights now have {source_sha256[:16]}…; {again}", folder)
    if input_hw is not None and tuple(man.get("input_size", ())) != tuple(int(v) for v in input_hw):
        raise InputError(f"stale export: input size {man.get('input_size')} but {list(input_hw)} wanted; {again}",
                         folder)
    graphs = man["graphs"] if variant == "fp32" else man.get("variants", {}).get(variant)
    if not graphs:
        raise InputError(f"export has no {variant} graphs; {again}" + (" with --int8" if variant == "int8" else ""),
                         folder)
    for role, g in graphs.items():
        f = folder / g["file"]
        if not f.is_file():
            raise InputError(f"corrupt export: {g['file']} is missing; {again}", folder)
        if file_sha256(f) != g["sha256"]:
            raise InputError(f"corrupt export: {g['file']} does not match its sha256 in {MANIFEST}; {again}",
                             folder)
    return man


def update_manifest(folder, man: dict) -> None:
    """Rewrite ``folder``'s manifest.json (atomically) with ``man``."""
    from needletrack.utils import write_json_atomic

    write_json_atomic(Path(folder) / MANIFEST, man)


# --------------------------------------------------------------------------------------------------------
# which paths name an export folder; failed exports
# --------------------------------------------------------------------------------------------------------
def is_export_path(p) -> bool:
    """True for a .onnx file, a manifest.json or a folder (route it to the export as is)."""
    if not isinstance(p, (str, os.PathLike)):
        return False
    p = Path(p)
    return p.suffix.lower() == ".onnx" or p.name == MANIFEST or p.is_dir()


def export_folder_of(p) -> Path:
    """The export folder that ``p`` (a folder, its manifest.json or one of its graphs) names."""
    p = Path(p)
    if p.is_dir():
        return p
    if p.name == MANIFEST or p.suffix.lower() == ".onnx":
        if not p.exists():
            raise InputError("file not found", p)
        return p.parent
    raise InputError("not an ONNX export folder", p)


def failure_record_path(folder) -> Path:
    """Where ensure_export remembers that exporting into ``folder`` failed (``<folder>.failed.json``)."""
    folder = Path(folder)
    return folder.parent / f"{folder.name}.failed.json"


def recorded_failure(record: Path, sha256: str) -> str | None:
    """The error of an earlier failed export of these weights with this torch and export format, else None."""
    try:
        rec = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    import torch

    if not isinstance(rec, dict) or rec.get("source_sha256") != sha256 or rec.get("format") != EXPORT_FORMAT \
            or rec.get("torch") != torch.__version__ or not isinstance(rec.get("error"), str):
        return None
    return rec["error"]


def record_failure(record: Path, sha256: str, error: str) -> None:
    """Remember a failed export of these weights (best effort: only a speed-up for the next run)."""
    import torch

    from needletrack.utils import write_json_atomic

    try:
        write_json_atomic(record, {"source_sha256": sha256, "format": EXPORT_FORMAT, "torch": torch.__version__,
                                   "error": error, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    except OSError:
        pass  # only a speed-up for the next run
