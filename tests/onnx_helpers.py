"""Shared by the ONNX tests (test_onnx.py, test_onnx_export.py): the per-test cache folder and one thread,
and tiny random-weight models whose maps are neither all-on nor all-off."""
from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEEDLETRACK_CACHE_DIR", str(tmp_path / "cache"))
    # one thread each: on a shared 2-core machine, two spinning threads per runtime crawl (torch's own
    # thread count is kept at 1 by tests/conftest.py)
    monkeypatch.setenv("NEEDLETRACK_THREADS", "1")


def _tiny(name="stnan_tiny", seed=0):
    """A random-weight tiny model whose decoder bias is shifted so that about 15 % of a simulated frame's
    pixels are above 0.5 (an untrained net is otherwise all-on or all-off, and nothing reaches memory)."""
    from needletrack.models import build_model
    from needletrack.sim import simulate_sequence

    torch.manual_seed(seed)
    model = build_model(name).eval()
    f, m, _ = next(iter(simulate_sequence(1, size=64, preset="clinical", seed=seed)))
    x = torch.from_numpy(f.astype(np.float32) / 255)[None, None]
    with torch.no_grad():
        q = model.encode_key(x)
        v = model.encode_value(x, torch.from_numpy(m.astype(np.float32))[None, None], q.f16)
        logit = model.segment(model.read_memory(v.new_zeros(1) + q.key.flatten(2), v.flatten(2), q.key), q)
        model.decoder.pred.bias -= torch.quantile(logit.flatten(), 0.85)
    return model


def _saved(tmp_path, name="stnan_tiny"):
    from needletrack.models import save_model

    p = tmp_path / "weights" / f"{name}.safetensors"
    save_model(_tiny(name), p)
    return p
