"""`needletrack benchmark` and needletrack.eval.benchmark: figures of the whole tracker step."""
from __future__ import annotations

import json

import pytest

import onnxruntime  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
import torch


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
    m = res["model"]                                       # the real-time bar: >= 25 frames/s and p99 <= 40 ms
    assert res["realtime_25fps"] is (m["fps"] >= 25.0 and m["ms_p99"] <= 40.0)


def test_benchmark_says_no_when_a_step_misses_the_budget(monkeypatch):
    """A tracker slowed to ~45 ms a step is below 25 frames/s: the bar must say no (and yes when fast)."""
    import time

    from needletrack.eval.benchmark import benchmark
    from needletrack.track.tracker import Tracker

    real_step = Tracker.step

    def slow_step(self, *a, **kw):
        time.sleep(0.045)
        return real_step(self, *a, **kw)

    fast = benchmark("stnan_tiny", engine="torch", frames=10, warmup=1, compare=None, frame_size=64,
                     isolate=False, log=lambda m: None)
    monkeypatch.setattr(Tracker, "step", slow_step)
    slow = benchmark("stnan_tiny", engine="torch", frames=10, warmup=1, compare=None, frame_size=64,
                     isolate=False, log=lambda m: None)
    assert slow["model"]["fps"] < 25.0 and slow["realtime_25fps"] is False
    assert fast["realtime_25fps"] is (fast["model"]["fps"] >= 25.0 and fast["model"]["ms_p99"] <= 40.0)


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
