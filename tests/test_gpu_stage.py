"""scripts/gpu_stage.sh, the one-call GPU training stage, run on the CPU with the tiny config: it trains, writes
what comes back from the device machine, and resumes from a carried checkpoint."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_stage.sh"


def _run(tmp_path, carry, *args):
    env = dict(os.environ, OUT=str(tmp_path / "out"), CARRY=str(carry), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300)


def test_a_stage_trains_and_a_carried_checkpoint_resumes_it(tmp_path):
    carry = tmp_path / "carry"
    r = _run(tmp_path, carry, "configs/train/tiny.yaml", "--steps", "2", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "out" / "stage"
    files = sorted(p.name for p in out.iterdir())
    assert {"best.safetensors", "last.safetensors", "checkpoint.pt", "summary.json"} <= set(files)
    assert len(files) <= 8                                  # what one device call can bring back
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    (carry / "resume").mkdir(parents=True)
    for name in ("checkpoint.pt", "last.safetensors"):
        (carry / "resume" / name).write_bytes((out / name).read_bytes())
    r = _run(tmp_path, carry, "configs/train/tiny.yaml", "--steps", "4", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resum" in (r.stdout + r.stderr).lower()
    assert json.loads((out / "summary.json").read_text())["steps"] == 4


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    r = _run(tmp_path, tmp_path / "carry", "configs/train/no_such.yaml")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no config" in r.stderr


@pytest.mark.parametrize("name", ["stage5_cpu.yaml", "stage6_cpu.yaml", "stage6_gpu.yaml"])
def test_the_stage_configs_load(name):
    from needletrack.train.config import load_config

    cfg = load_config(ROOT / "configs" / "train" / name)
    assert cfg.size == 320 and cfg.model_config().input_size == 320
