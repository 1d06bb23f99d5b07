"""Engines: the only place the tracker touches a model.

An engine hides where the network runs (PyTorch here, ONNX Runtime in ``onnx_engine.py``) behind the model's
operations (docs/internals.md "Models"), on the model's square/rectangular input:

    q    = engine.encode_key(image, prev=None)       # QueryFeatures-like, q.key 1×Ck×h×w, q.raw16 for flow
    v    = engine.encode_value(image, mask, q)       # 1×Cv×h×w
    r    = engine.read_memory(mem_key, mem_val, q, valid=None, top_k=None)
    prob = engine.segment(r, q)                      # numpy float32 (H_in, W_in), sigmoid applied
    prob = engine.predict(image)                     # per-frame baselines (is_memory_model False)

``image`` is a float32 (H_in, W_in) array in [0, 1] (numpy or torch) already letterboxed by
:class:`Letterbox`; ``mask`` likewise in [0, 1]. Memory tensors are whatever ``engine.zeros`` allocates, so the
memory store works unchanged on torch tensors or numpy arrays.
"""
from __future__ import annotations

import numpy as np

# the letterbox and the input-size helpers live one level down (``letterbox.py``), so the ONNX modules can
# use them without importing this module (which builds engines, the ONNX one included)
from needletrack.track.letterbox import DEFAULT_INPUT_SIZE, Letterbox, _hw, model_input_hw  # noqa: F401


# ----------------------------------------------------------------------------------------------------------
# the PyTorch engine
# ----------------------------------------------------------------------------------------------------------
class TorchEngine:
    """Runs a needletrack model (``needletrack.models``) with PyTorch, under inference mode."""

    name = "torch"

    def __init__(self, model, device: str = "cpu", input_size=None):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.is_memory_model = bool(getattr(model, "is_memory_model", False))
        self.input_hw = model_input_hw(model, input_size)
        cfg = getattr(model, "cfg", None)
        self.top_k_default = getattr(cfg, "top_k", 20) if cfg is not None else 20

    # -- conversions ----------------------------------------------------------------------------------
    def _image(self, x):
        t = self.torch
        if isinstance(x, np.ndarray):
            x = t.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        x = x.to(self.device, t.float32)
        while x.dim() < 4:
            x = x.unsqueeze(0)
        return x

    def zeros(self, shape, dtype: str = "float32"):
        t = self.torch
        return t.zeros(tuple(shape), dtype=t.bool if dtype == "bool" else t.float32, device=self.device)

    @staticmethod
    def key_of(q):
        return q.key

    # -- model operations -----------------------------------------------------------------------------
    def encode_key(self, image, prev=None):
        with self.torch.inference_mode():
            return self.model.encode_key(self._image(image), prev=prev)

    def encode_value(self, image, mask, q):
        with self.torch.inference_mode():
            return self.model.encode_value(self._image(image), self._image(mask), q.f16)

    def read_memory(self, mem_key, mem_val, q, valid=None, top_k=None):
        with self.torch.inference_mode():
            return self.model.read_memory(mem_key, mem_val, q.key, valid=valid, top_k=top_k)

    def segment(self, readout, q) -> np.ndarray:
        with self.torch.inference_mode():
            logit = self.model.segment(readout, q)
            return self._prob(logit)

    def predict(self, image) -> np.ndarray:
        with self.torch.inference_mode():
            return self._prob(self.model(self._image(image)))

    def _prob(self, logit) -> np.ndarray:
        p = self.torch.sigmoid(logit.float())[0, 0]
        if tuple(p.shape) != self.input_hw:  # a model may return a smaller logit; bring it to the input size
            p = self.torch.nn.functional.interpolate(p[None, None], size=self.input_hw, mode="bilinear",
                                                     align_corners=False)[0, 0]
        return p.detach().cpu().numpy().astype(np.float32, copy=False)


def make_engine(name_or_path, device: str = "cpu", engine: str = "auto", input_size=None, log=None):
    """Build an engine for a model name, a checkpoint path, an ONNX export, or a model object.

    ``engine``: "torch", "onnx" or "auto". "auto" picks ONNX Runtime for an export (a ``.onnx`` file, an export
    folder or its manifest.json) and, on the CPU, for a weights name/path whose graphs are cached or can be
    exported now (``onnx_engine.auto_engine``); otherwise (a GPU device, a model object, no onnxruntime, a
    failed export) PyTorch.
    """
    from pathlib import Path

    from needletrack.errors import NeedletrackError

    if engine not in ("auto", "torch", "onnx"):
        raise NeedletrackError(f"unknown engine {engine!r} (choose auto, torch or onnx)")
    is_path = isinstance(name_or_path, (str, Path))
    onnx_mod = None
    if engine != "torch":
        try:
            from needletrack.track import onnx_engine as onnx_mod
            from needletrack.track import onnx_export
        except ModuleNotFoundError as e:
            if not (e.name and e.name.startswith("needletrack")) and engine == "onnx":
                raise NeedletrackError(f"the ONNX engine needs {e.name} (pip install onnx onnxruntime)") from None
            if engine == "onnx":
                raise NeedletrackError("the ONNX engine is not available in this build") from None
            onnx_mod = None
    is_export = bool(onnx_mod is not None and is_path and onnx_export.is_export_path(name_or_path))
    if engine == "onnx" or is_export:
        return onnx_mod.OnnxEngine(name_or_path, device=device, input_size=input_size, log=log)
    if engine == "auto" and onnx_mod is not None and is_path:
        eng = onnx_mod.auto_engine(name_or_path, device=device, input_size=input_size, log=log)
        if eng is not None:
            return eng
    if is_path and str(name_or_path).lower().endswith(".onnx"):
        raise NeedletrackError("an .onnx model needs engine='onnx' (or 'auto')", name_or_path)
    if is_path:
        from needletrack.models import load_model

        model = load_model(name_or_path, device=device)
    else:
        model = name_or_path
    return TorchEngine(model, device=device, input_size=input_size)
