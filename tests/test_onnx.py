"""The ONNX Runtime engine: parity with torch through the streaming tracker, the memory read graph, session
options, the int8 variant. The export, its cache and the CLI: test_onnx_export.py."""
from __future__ import annotations

import os

import numpy as np
import pytest

import onnxruntime  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
import torch

from needletrack.errors import NeedletrackError
from onnx_helpers import _cache, _saved, _tiny  # noqa: F401 - _cache: the autouse fixture (cache folder, 1 thread)


@pytest.fixture(scope="module")
def clip():
    """40 simulated frames (96 px, resized to the 64 px model input) from the first with a visible needle."""
    from needletrack.sim import simulate_sequence

    # 80 frames: room for 40 after the first visible needle, which has moved with simulator changes (frame 32 once)
    seq = [(f, m) for f, m, _ in simulate_sequence(80, size=96, preset="clinical", seed=5)]
    k = next(i for i, (_, m) in enumerate(seq) if m.any())
    seq = seq[k:k + 40]
    assert len(seq) == 40
    return seq


def _track(engine, clip, **kw):
    from needletrack.track import Tracker

    # the v1 mask policy: parity of the engines' maps and memory writes is what is tested here; the segment
    # policy's discrete decisions (RANSAC, jump rule) would turn 1e-4 map differences into different writes
    kw.setdefault("policy", "mask")
    tr = Tracker(engine, **kw)
    out = [tr.step(f, mask=m) if i == 0 else tr.step(f) for i, (f, m) in enumerate(clip)]
    return tr, out


@pytest.mark.parametrize("name", ["stnan_tiny", "stcn_tiny"])
def test_tracker_parity_torch_vs_onnx(name, clip):
    """40 frames through Tracker with each engine: memory passes its cap; masks and probabilities agree."""
    from needletrack.track.onnx_engine import OnnxEngine

    model = _tiny(name)
    eng = OnnxEngine(model)
    assert eng.static_memory and eng.is_memory_model and eng.input_hw == (64, 64)
    # random weights: write memory whenever something is visible, every 2 frames, 3 ring slots
    kw = dict(mem_every=2, memory_slots=4, mem_min_score=0.0)
    tr_t, res_t = _track(model, clip, **kw)
    tr_o, res_o = _track(eng, clip, **kw)
    assert tr_o.memory.writes > tr_o.memory.cap + 1, "the clip must wrap the memory ring"
    assert tr_o.memory.frames == tr_t.memory.frames
    assert isinstance(tr_o.memory.keys, np.ndarray) and tr_o.memory.keys.shape[2] == 4 * 16
    probs_vary = 0
    for a, b in zip(res_t[1:], res_o[1:]):
        assert np.abs(a.prob - b.prob).max() <= 1e-3
        u = np.logical_or(a.mask, b.mask).sum()
        iou = np.logical_and(a.mask, b.mask).sum() / u if u else 1.0
        assert iou >= 0.99
        assert a.visible == b.visible
        probs_vary += int(((a.prob > 0.05) & (a.prob < 0.95)).sum() > 0)
    assert probs_vary > 10, "parity on saturated probabilities would prove little"


def test_memory_read_graph_any_slot_count_and_topk_paths():
    """The read graph equals the model's read for the exported slot count (masked) and for others (on demand),
    top-k and dense."""
    from needletrack.models.memory import read_memory
    from needletrack.track.onnx_engine import OnnxEngine

    model = _tiny()
    eng = OnnxEngine(model)
    man = eng.manifest
    hw = 4 * 4
    rng = np.random.default_rng(0)
    q = eng.encode_key(rng.random((64, 64), dtype=np.float32))
    for memory_slots, filled, top_k in ((man["memory_slots"], 3, 20), (5, 5, 7), (2, 1, None)):
        n = memory_slots * hw
        mk = rng.standard_normal((1, man["key_dim"], n)).astype(np.float32)
        mv = rng.standard_normal((1, man["value_dim"], n)).astype(np.float32)
        valid = np.zeros((1, n), bool)
        valid[:, :filled * hw] = True
        got = eng.read_memory(mk, mv, q, valid=valid, top_k=top_k)
        want = read_memory(torch.from_numpy(mk[:, :, :filled * hw]), torch.from_numpy(mv[:, :, :filled * hw]),
                           torch.from_numpy(q.key), top_k=top_k).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_gather_read_equals_scatter_read():
    from needletrack.track.onnx_export import export_read_graph
    from needletrack.track.onnx_engine import make_session
    import io

    model = _tiny()
    rng = np.random.default_rng(1)
    n = 6 * 16
    feeds = {"mem_key": rng.standard_normal((1, 8, n)).astype(np.float32),
             "mem_val": rng.standard_normal((1, 16, n)).astype(np.float32),
             "valid": rng.random((1, n)) > 0.3, "key": rng.standard_normal((1, 8, 4, 4)).astype(np.float32)}
    outs = []
    for gather in (True, False):
        buf = io.BytesIO()
        export_read_graph(model, buf, n_positions=n, key_dim=8, value_dim=16, feature_hw=(4, 4), top_k=20,
                          gather=gather)
        outs.append(make_session(buf.getvalue(), 1).run(None, feeds)[0])
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


def test_engine_refuses_gpu_and_unknown_precision():
    from needletrack.track.onnx_engine import OnnxEngine

    with pytest.raises(NeedletrackError, match="CPU"):
        OnnxEngine("default", device="cuda")
    with pytest.raises(NeedletrackError, match="precision"):
        OnnxEngine("default", precision="fp8")


def test_session_options_and_threads(monkeypatch):
    import onnxruntime as ort

    from needletrack.track.onnx_engine import default_threads, physical_cores, session_options

    monkeypatch.delenv("NEEDLETRACK_THREADS")
    n = physical_cores()
    assert 1 <= n <= (os.cpu_count() or 1)
    so = session_options()
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.intra_op_num_threads == n and so.inter_op_num_threads == 1
    if n > 1:
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(2, spin=True).get_session_config_entry("session.intra_op.allow_spinning") == "1"
    monkeypatch.setenv("NEEDLETRACK_ORT_SPIN", "1")
    assert session_options(2).get_session_config_entry("session.intra_op.allow_spinning") == "1"
    monkeypatch.setenv("NEEDLETRACK_ORT_SPIN", "yes")
    with pytest.raises(NeedletrackError, match="NEEDLETRACK_ORT_SPIN"):
        session_options(2)
    monkeypatch.delenv("NEEDLETRACK_ORT_SPIN")
    monkeypatch.setenv("NEEDLETRACK_THREADS", "1")
    assert default_threads() == 1 and session_options().intra_op_num_threads == 1
    monkeypatch.setenv("NEEDLETRACK_THREADS", "zero")
    with pytest.raises(NeedletrackError, match="NEEDLETRACK_THREADS"):
        default_threads()


def test_int8_variant_quantises_and_stays_close(tmp_path, clip):
    from needletrack.track.onnx_engine import OnnxEngine
    from needletrack.track.onnx_engine import ensure_int8

    model = _tiny()
    e32 = OnnxEngine(model)
    man = ensure_int8(e32.folder, sequences=1, frames=6)
    assert set(man["variants"]["int8"]) == {"key", "value", "decoder"}
    assert man["int8"]["fp32_roles"] == ["read"]
    import onnx

    g = onnx.load(str(e32.folder / "key.int8.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in g.graph.node)
    e8 = OnnxEngine(e32.folder, precision="int8")
    assert e8.name == "onnx-int8"
    _, r32 = _track(e32, clip[:10], mem_every=2, mem_min_score=0.0)
    _, r8 = _track(e8, clip[:10], mem_every=2, mem_min_score=0.0)
    diffs = [np.abs(a.prob - b.prob).mean() for a, b in zip(r32[1:], r8[1:])]
    assert 0 < max(diffs) < 0.1  # quantised: different, but not unrelated
    # a cached int8 variant is reused; asking the engine for int8 of a model object works too
    assert OnnxEngine(model, precision="int8").folder == e32.folder


def test_tracker_from_pretrained_with_onnx_engine(tmp_path, clip):
    """The public route: Tracker.from_pretrained(weights, engine="onnx") tracks like the torch engine."""
    from needletrack.track import Tracker

    w = _saved(tmp_path)
    tr_o = Tracker.from_pretrained(str(w), engine="onnx", mem_min_score=0.0)
    tr_t = Tracker.from_pretrained(str(w), engine="torch", mem_min_score=0.0)
    assert tr_o.engine.name == "onnx" and tr_o.static_memory and not tr_t.static_memory
    for i, (f, m) in enumerate(clip[:8]):
        a = tr_t.step(f, mask=m if i == 0 else None)
        b = tr_o.step(f, mask=m if i == 0 else None)
        assert np.abs(a.prob - b.prob).max() <= 1e-3
