"""`needletrack demo` picks one thread and the ONNX engine by default (fast on a busy CPU) and says so."""
import json

import pytest

from needletrack.cli import main


@pytest.fixture
def tiny_weights(tmp_path):
    from needletrack.models import build_model, save_model

    return save_model(build_model("stnan_tiny"), tmp_path / "w" / "tiny.safetensors")


def test_demo_defaults_to_onnx_on_one_thread_and_says_so(tmp_path, tiny_weights, capsys, monkeypatch):
    import torch

    monkeypatch.delenv("NEEDLETRACK_THREADS", raising=False)
    torch.set_num_threads(2)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "4", "--size", "64", "--model", str(tiny_weights),
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "[engine onnx, 1 thread]" in text
    assert json.loads((out / "summary.json").read_text())["engine"] == "onnx"
    assert torch.get_num_threads() == 2                     # restored for an in-process caller
    import os

    assert "NEEDLETRACK_THREADS" not in os.environ


def test_demo_threads_and_engine_options(tmp_path, tiny_weights, capsys, monkeypatch):
    monkeypatch.setenv("NEEDLETRACK_THREADS", "3")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "3", "--size", "64", "--model", str(tiny_weights),
                 "--quiet", "--engine", "torch"]) == 0
    assert "[engine torch, 3 threads]" in capsys.readouterr().out
    assert main(["demo", "--out", str(out), "--frames", "3", "--size", "64", "--model", str(tiny_weights),
                 "--quiet", "--engine", "torch", "--threads", "1"]) == 0
    assert "[engine torch, 1 thread]" in capsys.readouterr().out
    assert main(["demo", "--out", str(out), "--frames", "3", "--threads", "0"]) == 2
    monkeypatch.setenv("NEEDLETRACK_THREADS", "many")
    assert main(["demo", "--out", str(out), "--frames", "3"]) == 2
    assert "NEEDLETRACK_THREADS" in capsys.readouterr().err
