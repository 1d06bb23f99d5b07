"""The ONNX export: every fast preset, the export cache (hit, corrupt, stale), refusal of a bad explicit export,
failed exports remembered, the CLI's errors. The engine itself: test_onnx.py."""
from __future__ import annotations

import json

import numpy as np
import pytest

import onnxruntime  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
import torch

from needletrack.errors import InputError
from onnx_helpers import _cache, _saved, _tiny  # noqa: F401 - _cache: the autouse fixture (cache folder, 1 thread)


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
