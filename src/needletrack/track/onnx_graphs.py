"""The ONNX graphs of a needletrack model and the one exporter (split from ``onnx_export.py``).

:func:`graph_wrappers` wraps a model's parts as the deployed graphs (key, value, memory read, decoder; or one
``predict`` graph for a per-frame baseline; the interface is in ``onnx_export.py``). :func:`export_graph` is the
project's one ``torch.onnx.export`` call (TorchScript exporter, opset :data:`OPSET`, constant folding; the
exporter's IR dump kept off stdout; :class:`ExportError` naming the graph on failure): the export command, the
engine's cache, ``needletrack models --engine onnxruntime`` and the benchmarks all export through it.
torch and onnx are imported only inside the functions.
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings

from needletrack.errors import NeedletrackError

OPSET = 17


class ExportError(NeedletrackError):
    """The model cannot be exported to ONNX (an operator the exporter does not support, ...)."""


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
    output; the error itself is reported by :func:`export_graph`."""
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


def export_graph(module, args, path, input_names, output_names) -> None:
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
    """The memory read alone (no weights) for ``n_positions`` memory positions. ``model=None``: the models'
    own read (:func:`needletrack.models.memory.read_memory`; the read has no weights, so no model is needed)."""
    import torch

    if model is None:
        model = _weightless_reader()
    *_, Read, _, _ = graph_wrappers()
    h, w = feature_hw
    args = (torch.randn(1, key_dim, n_positions), torch.randn(1, value_dim, n_positions),
            torch.ones(1, n_positions, dtype=torch.bool), torch.randn(1, key_dim, h, w))
    export_graph(Read(model, top_k, gather), args, path, ["mem_key", "mem_val", "valid", "key"], ["readout"])


class _Reader:
    """Stands in for a model in the read graph: only ``read_memory``, which has no weights."""

    def __init__(self, read_memory):
        self.read_memory = read_memory


def _weightless_reader() -> _Reader:
    from needletrack.models.memory import read_memory

    return _Reader(read_memory)


def graph_io(path) -> tuple[list, list]:
    """(inputs, outputs) of an ONNX file: name, shape and dtype of each (initializers left out)."""
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
