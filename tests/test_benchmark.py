"""`needletrack benchmark` and needletrack.eval.benchmark: figures of the whole tracker step."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("NEEDLETRACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NEEDLETRACK_WEIGHTS_DIR", str(tmp_path / "weights"))  # no shipped weights here
    monkeypatch.setenv("NEEDLETRACK_THREADS", "1")   # torch's threads: reset after each test by conftest.py


def _check_row(r, engine, size):
    assert r["engine"] == engine and r["input_size"] == [size, size]
    assert r["frames"] == 10 and r["threads"] == 1
    assert 0 < r["ms_p50"] <= r["ms_p95"] <= r["ms_p99"] <= r["ms_max"]
    assert r["fps"] == pytest.approx(1e3 / r["ms_mean"])
    assert r["peak_rss_mb"] >= r["rss_ready_mb"] * 0.9 > 0


def test_benchmark_in_process_with_comparator():
    from needletrack.eval.benchmark import benchmark

    logs = []
    res = benchmark("stnan_tiny", engine="onnx", frames=10, warmup=2, compare="stcn_tiny", frame_size=96,
                    isolate=False, log=logs.append)
    _check_row(res["model"], "onnx", 64)
    _check_row(res["comparator"], "onnx", 64)
    assert res["model"]["model"] == "stnan_tiny (untrained)" and res["model"]["trained"] is False
    assert res["speedup_vs_comparator"] == pytest.approx(res["model"]["fps"] / res["comparator"]["fps"])
    assert res["model"]["engine_info"]["graph_optimization"] == "ORT_ENABLE_ALL"
    assert any("UNTRAINED" in m for m in logs)
    assert isinstance(res["realtime_25fps"], bool)


def test_benchmark_torch_engine_at_other_size():
    from needletrack.eval.benchmark import run_one

    r = run_one("stnan_tiny", engine="torch", size=96, frames=10, warmup=1, frame_size=128, threads=1)
    _check_row(r, "torch", 96)
    assert r["frame_size"] == [128, 128] and r["torch_imported"]


def test_cli_benchmark_json(tmp_path, capsys):
    """The CLI path: each configuration in its own process, JSON written."""
    from needletrack.cli import main

    out = tmp_path / "b.json"
    assert main(["benchmark", "--model", "stnan_tiny", "--frames", "10", "--warmup", "1", "--frame-size", "64",
                 "--compare", "none", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    _check_row(res["model"], "onnx", 64)
    assert "comparator" not in res
    assert "frames/s" in capsys.readouterr().out


@pytest.mark.parametrize("argv, msg", [
    (["--frames", "3"], "--frames must be >= 10"),
    (["--size", "100"], "--size must be a positive multiple of 32"),
    (["--model", "no_such_model"], "no_such_model"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_cli_benchmark_bad_input(argv, msg, capsys):
    from needletrack.cli import main

    assert main(["benchmark", "--compare", "none", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1
