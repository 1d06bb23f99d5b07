"""Export a needletrack model to ONNX the way memory networks are deployed, and cache the graphs.

A memory model (STCN, STCN+C&T, STNAN) becomes four graphs with static shapes (README.md):

    key.onnx      image 1×1×H×W, prev 1×Cr×h×w, first bool[1]  -> key, f16, f8, f4, raw16
                  (backbone + flow regression + MAFFM + key projection; ``prev`` is the previous frame's
                  raw16; ``first`` = True matches the frame with itself, i.e. ``prev=None``. Models without
                  flow take only ``image`` and give no raw16.)
    value.onnx    image, mask 1×1×H×W, f16                      -> value 1×Cv×h×w
    read.onnx     mem_key 1×Ck×N, mem_val 1×Cv×N, valid bool 1×N, key 1×Ck×h×w -> readout 1×Cv×h×w
                  (N = memory_slots·h·w: the tracker's ring buffer, all slots read every frame, empty
                  slots masked out; top-k in the graph)
    decoder.onnx  readout, f16, f8, f4                          -> prob 1×1×H×W (sigmoid applied)

A per-frame baseline becomes one graph, ``predict.onnx`` (image -> prob). ``manifest.json`` records the
input size, memory slots, top-k, opset, the graphs' own sha256 and the source weights' sha256.

Graphs are cached next to the weights, ``<weights dir>/.onnx/<sha16>-<H>x<W>/`` (``sha16`` = the first 16 hex
digits of the weights file's sha256), or under ``$NEEDLETRACK_CACHE_DIR`` (default
``$XDG_CACHE_HOME/needletrack`` or ``~/.cache/needletrack``) ``/onnx/...`` when the weights folder is not
writable or lies inside an installed package (the wheel's shipped weights), or the model came as an object. A
cached export that is corrupt (a graph's sha256 differs from the manifest) or stale (other source checksum,
input size or export format) is rebuilt; an explicitly given export folder in that state is refused with a
message that says what to re-run. A failed export (a model the exporter cannot convert, e.g. PSPNet's adaptive
pooling) is remembered beside where its folder would be, ``<sha16>-<H>x<W>.failed.json``, so later runs fail
at once (``engine="auto"`` falls back to torch without tracing the model again) until torch or the export
format changes, the record is deleted, or ``rebuild=True``.

This module exports a model and keeps the cache (:func:`export_model`, :func:`ensure_export`,
:func:`cache_dir_for`). The graphs and the one exporter are in ``onnx_graphs.py``, the manifest checks and
checksums in ``onnx_manifest.py``; their names are importable from here too.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from needletrack.errors import InputError, NeedletrackError
# the graphs and the exporter (onnx_graphs.py), the manifest and checksums (onnx_manifest.py): every name
# stays importable from here
from needletrack.track.onnx_graphs import (OPSET, ExportError, _Q, _quiet_onnx_log, export_graph,  # noqa: F401
                                          export_read_graph, graph_io, graph_wrappers)
from needletrack.track.onnx_manifest import (EXPORT_FORMAT, KEY_GRAPHS, MANIFEST, check_export,  # noqa: F401
                                            export_folder_of, failure_record_path, file_sha256, is_export_path,
                                            model_sha256, read_manifest, record_failure, recorded_failure,
                                            update_manifest)

# the old private names
_export, _graph_io, _record_failure, _recorded_failure = export_graph, graph_io, record_failure, recorded_failure


# --------------------------------------------------------------------------------------------------------
# locations
# --------------------------------------------------------------------------------------------------------
def user_cache_dir() -> Path:
    env = os.environ.get("NEEDLETRACK_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "needletrack"


def _writable_dir(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, p = tempfile.mkstemp(prefix=".probe.", dir=d)
        os.close(fd)
        os.unlink(p)
        return True
    except OSError:
        return False


def cache_dir_for(sha256: str, input_hw, weights_path=None) -> Path:
    """Where the export of weights with this checksum at this input size lives (not created)."""
    key = f"{sha256[:16]}-{int(input_hw[0])}x{int(input_hw[1])}"
    if weights_path is not None:
        from needletrack.resources import DATA_DIR

        folder = Path(weights_path).resolve().parent
        near = folder / ".onnx"
        if DATA_DIR not in (folder, *folder.parents) and _writable_dir(near):   # not into site-packages
            return near / key
    return user_cache_dir() / "onnx" / key


# --------------------------------------------------------------------------------------------------------
# the export
# --------------------------------------------------------------------------------------------------------
def export_model(model, out_dir, *, input_hw=None, memory_slots: int | None = None, top_k="model",
                 source: str | None = None, source_sha256: str | None = None, gather: bool = True) -> dict:
    """Write the graphs and manifest.json of ``model`` into ``out_dir`` (created; files written atomically:
    the whole folder appears at once). Returns the manifest."""
    import onnx
    import torch

    from needletrack.track.letterbox import model_input_hw

    out_dir = Path(out_dir)
    model = model.cpu().eval()
    cfg = getattr(model, "cfg", None)
    hw = model_input_hw(model, input_hw)
    h16, w16 = hw[0] // 16, hw[1] // 16
    is_mem = bool(getattr(model, "is_memory_model", False))
    if top_k == "model":
        top_k = getattr(cfg, "top_k", 20) if cfg is not None else 20
    # memory_slots (the first frame + the recent ring); the model config's ``mem_frames`` is its default
    memory_slots = int(memory_slots or getattr(cfg, "mem_frames", 9) or 9)
    if memory_slots < 2:
        raise NeedletrackError(f"memory slots must be >= 2 (the first frame and at least one more), "
                               f"got {memory_slots}")
    KeyFlow, KeyPlain, Value, Read, Decode, Predict = graph_wrappers()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)        # mkdtemp makes 0700; the export folder gets the usual permissions
    try:
        graphs: dict[str, dict] = {}
        torch.manual_seed(0)
        img = torch.rand(1, 1, *hw)
        has_flow = False
        with torch.no_grad():
            if is_mem:
                q = model.encode_key(img)
                has_flow = getattr(model, "flow", None) is not None
                if has_flow:
                    first = torch.tensor([True])
                    export_graph(KeyFlow(model), (img, q.raw16, first), tmp / "key.onnx",
                                 ["image", "prev", "first"],
                                 ["key", "f16", "f8", "f4", "raw16"])
                else:
                    export_graph(KeyPlain(model), (img,), tmp / "key.onnx", ["image"], ["key", "f16", "f8", "f4"])
                mask = (torch.rand(1, 1, *hw) > 0.9).float()
                export_graph(Value(model), (img, mask, q.f16), tmp / "value.onnx", ["image", "mask", "f16"],
                             ["value"])
                v = model.encode_value(img, mask, q.f16)
                ck, cv = int(q.key.shape[1]), int(v.shape[1])
                if tuple(q.key.shape[2:]) != (h16, w16):
                    raise NeedletrackError(f"key grid {tuple(q.key.shape[2:])} is not the input size / 16")
                n = memory_slots * h16 * w16
                export_read_graph(model, tmp / "read.onnx", n_positions=n, key_dim=ck, value_dim=cv,
                                  feature_hw=(h16, w16), top_k=top_k, gather=gather)
                r = model.read_memory(q.key.flatten(2), v.flatten(2), q.key)
                export_graph(Decode(model, hw), (r, q.f16, q.f8, q.f4), tmp / "decoder.onnx",
                             ["readout", "f16", "f8", "f4"], ["prob"])
            else:
                export_graph(Predict(model, hw), (img,), tmp / "predict.onnx", ["image"], ["prob"])
                ck = cv = n = None
        for f in sorted(tmp.glob("*.onnx")):
            onnx.checker.check_model(str(f))
            ins, outs = graph_io(f)
            graphs[f.stem] = {"file": f.name, "sha256": file_sha256(f), "bytes": f.stat().st_size,
                              "inputs": ins, "outputs": outs}
        man = {
            "format": EXPORT_FORMAT, "opset": OPSET,
            "model": getattr(cfg, "name", type(model).__name__), "arch": getattr(cfg, "arch", None),
            "is_memory_model": is_mem, "has_flow": has_flow,
            "input_size": [int(hw[0]), int(hw[1])], "feature_size": [h16, w16] if is_mem else None,
            "memory_slots": memory_slots if is_mem else None, "memory_positions": n, "key_dim": ck, "value_dim": cv,
            "top_k": top_k if is_mem else None, "read": ("top-k gather" if gather else "top-k scatter")
            if (is_mem and top_k is not None) else ("dense" if is_mem else None),
            "mem_every": getattr(cfg, "mem_every", None), "source": None if source is None else str(source),
            "source_sha256": source_sha256 or model_sha256(model), "config": cfg.to_dict() if cfg is not None else None,
            "graphs": graphs, "variants": {},
            "torch": torch.__version__, "onnx": onnx.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / MANIFEST).write_text(json.dumps(man, indent=2) + "\n")
        _replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return man


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temporary folder onto ``final`` (an old ``final`` is removed first)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.time_ns()}")
        try:
            os.replace(final, old)
        except OSError:
            old = None
        try:
            os.replace(tmp, final)
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    else:
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.exists():
                raise
            # another process finished the same export first: keep theirs


# --------------------------------------------------------------------------------------------------------
# resolving a source to an export folder
# --------------------------------------------------------------------------------------------------------
def ensure_export(source, *, input_hw=None, memory_slots=None, log=None, rebuild: bool = False) -> Path:
    """The cached export folder of ``source`` (a weights name/path or a model object), exporting it when
    missing, corrupt or stale. ``log(msg)`` hears about rebuilds."""
    model = None
    weights_path = None
    if isinstance(source, (str, os.PathLike)):
        from needletrack.models.weights import resolve_weights

        weights_path = resolve_weights(source)
        if not weights_path.exists():
            from needletrack.models import load_model

            load_model(source)  # raises the loader's message (how to train / missing file)
            raise InputError("weights file not found", weights_path)
        sha = file_sha256(weights_path)
        from needletrack.models.weights import read_metadata

        cfg, _ = read_metadata(weights_path)
        from needletrack.track.letterbox import _hw

        hw = _hw(input_hw if input_hw is not None else cfg.input_size)
    else:
        from needletrack.track.letterbox import model_input_hw

        model = source
        sha = model_sha256(model)
        hw = model_input_hw(model, input_hw)
    folder = cache_dir_for(sha, hw, weights_path)
    record = failure_record_path(folder)
    if not rebuild and not folder.exists():
        failed = recorded_failure(record, sha)
        if failed:
            # an export of these weights at this size failed before (e.g. PSPNet's adaptive pooling): tracing
            # the model again only to fail again cost ~30 s per run at 448 px, on every `track --engine auto`
            raise ExportError(f"{failed} (recorded in {record}; delete it to try the export again)")
    if folder.exists() and not rebuild:
        try:
            man = check_export(folder, sha, hw)
            if memory_slots is None or man.get("memory_slots") in (None, int(memory_slots)):
                return folder
            reason = f"memory slots {man.get('memory_slots')} but {memory_slots} wanted"
        except InputError as e:
            reason = str(e)
        if log:
            log(f"rebuilding the ONNX export ({reason})")
    if model is None:
        from needletrack.models import load_model

        model = load_model(weights_path)
    try:
        export_model(model, folder, input_hw=hw, memory_slots=memory_slots,
                     source=None if weights_path is None else str(weights_path), source_sha256=sha)
    except ExportError as e:
        record_failure(record, sha, str(e))
        raise
    record.unlink(missing_ok=True)
    return folder
