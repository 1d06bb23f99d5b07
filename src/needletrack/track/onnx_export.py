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
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from needletrack.errors import InputError, NeedletrackError

EXPORT_FORMAT = 1          # bump when the graphs' interface changes: older caches become stale
OPSET = 17
MANIFEST = "manifest.json"
KEY_GRAPHS = ("key", "value", "read", "decoder")


class ExportError(NeedletrackError):
    """The model cannot be exported to ONNX (an operator the exporter does not support, ...)."""


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


# --------------------------------------------------------------------------------------------------------
# the graphs
# --------------------------------------------------------------------------------------------------------
def graph_wrappers():
    """The export wrappers (KeyFlow, KeyPlain, Value, Read, Decode, Predict) around a model's parts."""
    import torch
    import torch.nn.functional as F
    from torch import nn


    class KeyFlow(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image, prev, first):
            raw = self.m.extract(image)
            p = torch.where(first.reshape(1, 1, 1, 1), raw.raw16, prev)  # first frame: matched with itself
            q = self.m.fuse_motion(raw, p)
            return q.key, q.f16, q.f8, q.f4, q.raw16

    class KeyPlain(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image):
            q = self.m.encode_key(image)
            return q.key, q.f16, q.f8, q.f4

    class Value(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, image, mask, f16):
            return self.m.encode_value(image, mask, f16)

    class Read(nn.Module):
        """The model's memory read; ``gather`` = the same top-k readout computed by gathering the k values
        instead of scattering weights into a dense N×M matrix (fewer multiply-adds, same result)."""

        def __init__(self, m, top_k, gather):
            super().__init__()
            self.m = m
            self.top_k = top_k
            self.gather = gather

        def forward(self, mem_key, mem_val, valid, key):
            n = mem_key.shape[2]
            if not self.gather or self.top_k is None or self.top_k >= n:
                return self.m.read_memory(mem_key, mem_val, key, valid=valid, top_k=self.top_k)
            b, ck, h, w = key.shape
            # logits (2·kMᵀkQ − ‖kM‖²)/√C with the scale folded into the query (M×C, not M×N) and the
            # ‖kM‖² term and the validity mask folded into one per-position bias (N): one pass over M×N
            s = 1.0 / math.sqrt(ck)
            q = key.flatten(2).transpose(1, 2) * (2.0 * s)  # B×M×C
            bias = mem_key.pow(2).sum(1) * -s  # B×N
            bias = torch.where(valid, bias, torch.full_like(bias, -1e30))
            logits = torch.bmm(q, mem_key) + bias.unsqueeze(1)  # B×M×N
            vals, idx = torch.topk(logits, self.top_k, dim=-1, sorted=False)  # B×M×k
            wgt = torch.softmax(vals, dim=-1)
            mv = mem_val[0].transpose(0, 1)  # N×Cv (batch 1: the tracker's); row gathers are fast, column ones not
            g = mv[idx[0]]  # M×k×Cv
            out = (g * wgt[0].unsqueeze(-1)).sum(1)  # M×Cv
            return out.transpose(0, 1).reshape(1, mem_val.shape[1], h, w)

    class Decode(nn.Module):
        def __init__(self, m, hw):
            super().__init__()
            self.m = m
            self.hw = tuple(hw)

        def forward(self, readout, f16, f8, f4):
            logit = self.m.segment(readout, _Q(f16, f8, f4))
            if tuple(logit.shape[-2:]) != self.hw:
                logit = F.interpolate(logit, size=self.hw, mode="bilinear", align_corners=False)
            return torch.sigmoid(logit)

    class Predict(nn.Module):
        def __init__(self, m, hw):
            super().__init__()
            self.m = m
            self.hw = tuple(hw)

        def forward(self, image):
            logit = self.m(image)
            if tuple(logit.shape[-2:]) != self.hw:
                logit = F.interpolate(logit, size=self.hw, mode="bilinear", align_corners=False)
            return torch.sigmoid(logit)

    return KeyFlow, KeyPlain, Value, Read, Decode, Predict


class _Q:
    def __init__(self, f16, f8, f4):
        self.key, self.f16, self.f8, self.f4, self.raw16 = None, f16, f8, f4, None


@contextlib.contextmanager
def _quiet_onnx_log():
    """Keep the TorchScript exporter's ONNX log off stdout. The exporter switches that log on for every export
    (its ``setup_onnx_logging`` tests the function ``_jit_is_onnx_log_enabled``, not its result), and a failed
    export then prints the whole Torch IR graph (150 KB for PSPNet) to stdout, into `needletrack track`'s
    output; the error itself is reported by :func:`_export`."""
    import torch

    c = torch._C
    original = getattr(c, "_jit_onnx_log", None)
    if original is None:
        yield
        return
    c._jit_onnx_log = lambda *args: None
    try:
        yield
    finally:
        c._jit_onnx_log = original


def _export(module, args, path, input_names, output_names) -> None:
    """torch.onnx.export (TorchScript exporter, opset 17, constant folding); ExportError naming the graph."""
    import torch

    module.eval()
    target = str(path) if isinstance(path, (str, os.PathLike)) else path  # a path or a file-like object
    name = os.path.basename(target) if isinstance(target, str) else "graph"
    with warnings.catch_warnings(), torch.no_grad(), _quiet_onnx_log():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, target, input_names=input_names, output_names=output_names,
                              opset_version=OPSET, dynamo=False, do_constant_folding=True)
        except Exception as e:  # noqa: BLE001 - the exporter raises many types; say which graph and why
            msg = str(e).splitlines()[0] if str(e) else ""
            raise ExportError(f"cannot export {name} to ONNX ({type(e).__name__}: {msg[:300]})") from e


def export_read_graph(model, path, *, n_positions: int, key_dim: int, value_dim: int, feature_hw,
                      top_k, gather: bool = True) -> None:
    """The memory read alone (no weights) for ``n_positions`` memory positions."""
    import torch

    *_, Read, _, _ = graph_wrappers()
    h, w = feature_hw
    args = (torch.randn(1, key_dim, n_positions), torch.randn(1, value_dim, n_positions),
            torch.ones(1, n_positions, dtype=torch.bool), torch.randn(1, key_dim, h, w))
    _export(Read(model, top_k, gather), args, path, ["mem_key", "mem_val", "valid", "key"], ["readout"])


def _graph_io(path) -> tuple[list, list]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def desc(vs):
        out = []
        for v in vs:
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
            out.append({"name": v.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name})
        return out
    init = {i.name for i in m.graph.initializer}
    return desc([v for v in m.graph.input if v.name not in init]), desc(m.graph.output)


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
    slots = int(memory_slots or getattr(cfg, "mem_frames", 9) or 9)
    if slots < 2:
        raise NeedletrackError(f"memory slots must be >= 2 (the first frame and at least one more), got {slots}")
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
                    _export(KeyFlow(model), (img, q.raw16, first), tmp / "key.onnx", ["image", "prev", "first"],
                            ["key", "f16", "f8", "f4", "raw16"])
                else:
                    _export(KeyPlain(model), (img,), tmp / "key.onnx", ["image"], ["key", "f16", "f8", "f4"])
                mask = (torch.rand(1, 1, *hw) > 0.9).float()
                _export(Value(model), (img, mask, q.f16), tmp / "value.onnx", ["image", "mask", "f16"], ["value"])
                v = model.encode_value(img, mask, q.f16)
                ck, cv = int(q.key.shape[1]), int(v.shape[1])
                if tuple(q.key.shape[2:]) != (h16, w16):
                    raise NeedletrackError(f"key grid {tuple(q.key.shape[2:])} is not the input size / 16")
                n = slots * h16 * w16
                export_read_graph(model, tmp / "read.onnx", n_positions=n, key_dim=ck, value_dim=cv,
                                  feature_hw=(h16, w16), top_k=top_k, gather=gather)
                r = model.read_memory(q.key.flatten(2), v.flatten(2), q.key)
                _export(Decode(model, hw), (r, q.f16, q.f8, q.f4), tmp / "decoder.onnx",
                        ["readout", "f16", "f8", "f4"], ["prob"])
            else:
                _export(Predict(model, hw), (img,), tmp / "predict.onnx", ["image"], ["prob"])
                ck = cv = n = None
        for f in sorted(tmp.glob("*.onnx")):
            onnx.checker.check_model(str(f))
            ins, outs = _graph_io(f)
            graphs[f.stem] = {"file": f.name, "sha256": file_sha256(f), "bytes": f.stat().st_size,
                              "inputs": ins, "outputs": outs}
        man = {
            "format": EXPORT_FORMAT, "opset": OPSET,
            "model": getattr(cfg, "name", type(model).__name__), "arch": getattr(cfg, "arch", None),
            "is_memory_model": is_mem, "has_flow": has_flow,
            "input_size": [int(hw[0]), int(hw[1])], "feature_size": [h16, w16] if is_mem else None,
            "memory_slots": slots if is_mem else None, "memory_positions": n, "key_dim": ck, "value_dim": cv,
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


def update_manifest(folder, man: dict) -> None:
    from needletrack.utils import write_json_atomic

    write_json_atomic(Path(folder) / MANIFEST, man)


# --------------------------------------------------------------------------------------------------------
# resolving a source to an export folder
# --------------------------------------------------------------------------------------------------------
def is_export_path(p) -> bool:
    if not isinstance(p, (str, os.PathLike)):
        return False
    p = Path(p)
    return p.suffix.lower() == ".onnx" or p.name == MANIFEST or p.is_dir()


def export_folder_of(p) -> Path:
    p = Path(p)
    if p.is_dir():
        return p
    if p.name == MANIFEST or p.suffix.lower() == ".onnx":
        if not p.exists():
            raise InputError("file not found", p)
        return p.parent
    raise InputError("not an ONNX export folder", p)


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
        failed = _recorded_failure(record, sha)
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
        _record_failure(record, sha, str(e))
        raise
    record.unlink(missing_ok=True)
    return folder


def failure_record_path(folder) -> Path:
    """Where ensure_export remembers that exporting into ``folder`` failed (``<folder>.failed.json``)."""
    folder = Path(folder)
    return folder.parent / f"{folder.name}.failed.json"


def _recorded_failure(record: Path, sha256: str) -> str | None:
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


def _record_failure(record: Path, sha256: str, error: str) -> None:
    import torch

    from needletrack.utils import write_json_atomic

    try:
        write_json_atomic(record, {"source_sha256": sha256, "format": EXPORT_FORMAT, "torch": torch.__version__,
                                   "error": error, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    except OSError:
        pass  # only a speed-up for the next run
