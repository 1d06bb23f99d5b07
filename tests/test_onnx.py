"""The ONNX Runtime engine: parity with torch through the streaming tracker, export of every fast preset,
the export cache (hit, corrupt, stale), refusal of a bad explicit export, the CLI's errors."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import onnxruntime  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
import torch

from needletrack.errors import InputError, NeedletrackError  # noqa: E402


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEEDLETRACK_CACHE_DIR", str(tmp_path / "cache"))
    # one thread each: on a shared 2-core machine, two spinning threads per runtime crawl (torch's own
    # thread count is kept at 1 by tests/conftest.py)
    monkeypatch.setenv("NEEDLETRACK_THREADS", "1")


@pytest.fixture(scope="module")
def clip():
    """40 simulated frames (96 px, resized to the 64 px model input) from the first with a visible needle."""
    from needletrack.sim import simulate_sequence

    seq = [(f, m) for f, m, _ in simulate_sequence(48, size=96, preset="clinical", seed=5)]
    k = next(i for i, (_, m) in enumerate(seq) if m.any())
    seq = seq[k:k + 40]
    assert len(seq) == 40
    return seq


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
    for slots, filled, top_k in ((man["memory_slots"], 3, 20), (5, 5, 7), (2, 1, None)):
        n = slots * hw
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


@pytest.mark.parametrize("name", ["stnan_fast", "stcn_ct_fast", "stcn_fast", "stnan_tiny", "stcn_tiny"])
def test_export_every_fast_preset(name, tmp_path):
    """Each fast preset exports (at 64 px to stay quick) and its key graph matches torch."""
    from needletrack.models import build_model, list_presets
    from needletrack.track.onnx_engine import OnnxEngine
    from needletrack.track.onnx_export import export_model

    assert name in list_presets()
    torch.manual_seed(0)
    model = build_model(name, input_size=64).eval()
    man = export_model(model, tmp_path / "x")
    assert set(man["graphs"]) == {"key", "value", "read", "decoder"}
    assert man["input_size"] == [64, 64] and man["memory_slots"] == model.cfg.mem_frames
    assert man["opset"] == 17 and len(man["source_sha256"]) == 64
    assert man["has_flow"] == model.cfg.has_flow
    eng = OnnxEngine(tmp_path / "x")
    x = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    q = eng.encode_key(x)
    with torch.no_grad():
        qt = model.encode_key(torch.from_numpy(x)[None, None])
    np.testing.assert_allclose(q.key, qt.key.numpy(), atol=1e-3, rtol=1e-3)


def _saved(tmp_path, name="stnan_tiny"):
    from needletrack.models import save_model

    p = tmp_path / "weights" / f"{name}.safetensors"
    save_model(_tiny(name), p)
    return p


def test_cache_next_to_weights_hit_corrupt_and_stale(tmp_path, monkeypatch):
    from needletrack.track import onnx_export as ox
    from needletrack.track.onnx_engine import OnnxEngine

    w = _saved(tmp_path)
    logs = []
    e1 = OnnxEngine(w, log=logs.append)
    sha = ox.file_sha256(w)
    assert e1.folder == w.parent / ".onnx" / f"{sha[:16]}-64x64"
    assert e1.manifest["source_sha256"] == sha and e1.manifest["source"] == str(w)

    # a hit: nothing is exported again
    def boom(*a, **k):
        raise AssertionError("exported again")
    monkeypatch.setattr(ox, "export_model", boom)
    e2 = OnnxEngine(w, log=logs.append)
    assert e2.folder == e1.folder and logs == []
    monkeypatch.undo()
    monkeypatch.setenv("NEEDLETRACK_CACHE_DIR", str(tmp_path / "cache"))

    # corrupt: a graph's bytes changed -> rebuilt, with a message
    g = e1.folder / "decoder.onnx"
    g.write_bytes(g.read_bytes()[:-100])
    e3 = OnnxEngine(w, log=logs.append)
    assert len(logs) == 1 and "corrupt" in logs[0] and "decoder.onnx" in logs[0]
    assert ox.file_sha256(g) == e3.manifest["graphs"]["decoder"]["sha256"]

    # stale: the manifest says other weights -> rebuilt
    man = json.loads((e1.folder / "manifest.json").read_text())
    man["source_sha256"] = "0" * 64
    (e1.folder / "manifest.json").write_text(json.dumps(man))
    OnnxEngine(w, log=logs.append)
    assert "stale" in logs[-1]
    assert json.loads((e1.folder / "manifest.json").read_text())["source_sha256"] == sha

    # new weights -> a new cache entry (keyed by checksum)
    _saved_other = _tiny(seed=1)
    from needletrack.models import save_model

    save_model(_saved_other, w)
    e4 = OnnxEngine(w)
    assert e4.folder != e1.folder and e4.manifest["source_sha256"] == ox.file_sha256(w)


def test_cache_falls_back_to_user_dir_when_weights_dir_is_not_writable(tmp_path, monkeypatch):
    from needletrack.track import onnx_export as ox
    from needletrack.track.onnx_engine import OnnxEngine

    w = _saved(tmp_path)
    real = ox._writable_dir
    monkeypatch.setattr(ox, "_writable_dir", lambda d: False if d == w.parent / ".onnx" else real(d))
    e = OnnxEngine(w)
    assert e.folder.parent == tmp_path / "cache" / "onnx"
    assert not (w.parent / ".onnx").exists()


def test_auto_engine_choice(tmp_path):
    from needletrack.track.onnx_engine import OnnxEngine, auto_engine

    w = _saved(tmp_path)
    assert isinstance(auto_engine(w), OnnxEngine)
    assert auto_engine(w, device="cuda") is None
    assert auto_engine(_tiny()) is None  # a model object stays with torch
    with pytest.raises(InputError):
        auto_engine(tmp_path / "missing.safetensors")


def test_explicit_export_refused_when_corrupt_or_stale(tmp_path):
    from needletrack.track.onnx_engine import OnnxEngine
    from needletrack.track.onnx_export import export_model, file_sha256

    model = _tiny()
    w = _saved(tmp_path)
    out = tmp_path / "export"
    export_model(model, out, source=str(w), source_sha256=file_sha256(w))
    OnnxEngine(out / "manifest.json")  # fine as exported
    OnnxEngine(out / "key.onnx")       # any graph of the folder names it
    # corrupt graph
    g = out / "value.onnx"
    good = g.read_bytes()
    g.write_bytes(b"not an onnx graph")
    with pytest.raises(InputError, match=r"corrupt export: value\.onnx .*re-run `needletrack export-onnx`"):
        OnnxEngine(out)
    g.write_bytes(good)
    # stale: the weights it came from changed
    from needletrack.models import save_model

    save_model(_tiny(seed=3), w)
    with pytest.raises(InputError, match="stale export"):
        OnnxEngine(out)
    # unreadable manifest / not an export
    (out / "manifest.json").write_text("{oops")
    with pytest.raises(InputError, match="unreadable manifest"):
        OnnxEngine(out)
    with pytest.raises(InputError, match="no manifest.json"):
        OnnxEngine(tmp_path / "weights")
    with pytest.raises(InputError, match="file not found"):
        OnnxEngine(tmp_path / "nope.onnx")


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


def test_cli_export_onnx(tmp_path, capsys):
    from needletrack.cli import main

    out = tmp_path / "exp"
    assert main(["export-onnx", "--model", "stnan_tiny", "--untrained", "--out", str(out), "--memory-slots", "4"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["memory_slots"] == 4 and man["memory_positions"] == 4 * 16
    # re-export over a previous export is fine (--slots: the old spelling of --memory-slots, still accepted)
    assert main(["export-onnx", "--model", "stnan_tiny", "--untrained", "--out", str(out), "--slots", "3"]) == 0
    assert json.loads((out / "manifest.json").read_text())["memory_slots"] == 3
    # a non-empty other folder is refused
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    capsys.readouterr()
    assert main(["export-onnx", "--model", "stnan_tiny", "--untrained", "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "other" in err and "not empty" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "other" / "keep.txt").exists()
    # no weights and no --untrained: one line, exit 2
    assert main(["export-onnx", "--model", "stnan_tiny", "--out", str(tmp_path / "e2")]) == 2
    err = capsys.readouterr().err
    assert "no trained weights" in err and len(err.strip().splitlines()) == 1
    assert main(["export-onnx", "--model", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "e3")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
    assert main(["export-onnx", "--model", "stnan_tiny", "--untrained", "--out", str(tmp_path / "e4"),
                 "--size", "50"]) == 2


def test_per_frame_baseline_exports_as_one_predict_graph():
    from needletrack.models import build_model
    from needletrack.track.engine import TorchEngine
    from needletrack.track.onnx_engine import OnnxEngine

    torch.manual_seed(0)
    model = build_model("unet_tiny").eval()
    eng = OnnxEngine(model)
    assert not eng.is_memory_model and set(eng.manifest["graphs"]) == {"predict"}
    x = np.random.default_rng(2).random(eng.input_hw, dtype=np.float32)
    np.testing.assert_allclose(eng.predict(x), TorchEngine(model).predict(x), atol=1e-4)


def test_unexportable_model_error_and_auto_fallback(tmp_path):
    """PSPNet's adaptive pooling does not export at this size: a clear error; 'auto' falls back to torch."""
    from needletrack.models import build_model, save_model
    from needletrack.track.onnx_engine import OnnxEngine, auto_engine
    from needletrack.track.onnx_export import ExportError

    model = build_model("pspnet_tiny").eval()
    with pytest.raises(ExportError, match=r"cannot export predict\.onnx to ONNX"):
        OnnxEngine(model)
    p = save_model(model, tmp_path / "w" / "psp.safetensors")
    logs = []
    assert auto_engine(p, log=logs.append) is None
    assert "using torch" in logs[0]
    assert not any((tmp_path / "w" / ".onnx").glob("*/manifest.json"))  # nothing half-written


def test_failed_export_is_remembered_and_prints_nothing(tmp_path, monkeypatch, capfd):
    """A weights file that cannot export is traced once: later 'auto' loads fall back to torch from the
    record (this cost ~30 s per `track` run at 448 px), and the exporter's IR dump stays off stdout."""
    from needletrack.models import build_model, save_model
    from needletrack.track import onnx_export
    from needletrack.track.engine import make_engine
    from needletrack.track.onnx_engine import auto_engine
    from needletrack.track.onnx_export import ExportError, ensure_export

    p = save_model(build_model("pspnet_tiny").eval(), tmp_path / "w" / "psp.safetensors")
    logs = []
    assert auto_engine(p, log=logs.append) is None
    out = capfd.readouterr().out
    assert "Torch IR graph" not in out and out == ""
    records = list((tmp_path / "w" / ".onnx").glob("*.failed.json"))
    assert len(records) == 1 and "adaptive_avg_pool2d" in json.loads(records[0].read_text())["error"]

    calls = []
    real_export = onnx_export.export_model
    monkeypatch.setattr(onnx_export, "export_model", lambda *a, **k: calls.append(1) or real_export(*a, **k))
    logs.clear()
    eng = make_engine(str(p), engine="auto", log=logs.append)
    assert eng.name == "torch" and calls == []
    assert len(logs) == 1 and "using torch" in logs[0] and "recorded in" in logs[0]
    with pytest.raises(ExportError, match=r"cannot export predict\.onnx to ONNX.*recorded in"):
        ensure_export(p)
    assert calls == []
    with pytest.raises(ExportError, match=r"cannot export predict\.onnx to ONNX"):
        ensure_export(p, rebuild=True)      # rebuild tries again
    assert calls == [1]
    # a record from another torch version (or other weights) is ignored: the export is tried again
    rec = json.loads(records[0].read_text())
    records[0].write_text(json.dumps({**rec, "torch": "0.0"}))
    with pytest.raises(ExportError):
        ensure_export(p)
    assert calls == [1, 1] and json.loads(records[0].read_text())["torch"] == torch.__version__


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
