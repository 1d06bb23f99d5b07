"""`needletrack train` under torchrun: 2 CPU processes (gloo), DDP replicas must end identical."""
import json
import os
import subprocess
import sys

import yaml

from needletrack.train.toy import make_toy_dataset


def test_torchrun_two_cpu_processes_keep_identical_replicas(tmp_path):
    root = make_toy_dataset(tmp_path / "toy", sequences=2, frames=8, size=64, seed=5)
    cfg = {
        "seed": 1, "model": "stnan_tiny", "size": 64, "steps": 3, "batch_size": 2, "log_every": 1,
        "clip": {"frames": 3, "gap": [1, 2]},
        "data": {"sources": [{"kind": "folder", "root": str(root)}], "num_workers": 0},
        "optim": {"lr": 3e-3}, "schedule": {"warmup": 0},
        "val": {"root": str(root), "every": 0}, "checkpoint_every": 0, "tensorboard": False,
    }
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "needletrack", "train", str(cfg_path), "--out", str(out), "--device", "cpu", "--no-progress"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["world_size"] == 2 and s["steps"] == 3 and s["finished"]
    assert len(s["replica_digests"]) == 2 and s["replicas_identical"], s["replica_digests"]
    assert s["command"].startswith("torchrun --nproc_per_node=2")
    # each rank trained on its own data: the global batch is 2 ranks x 2 clips
    assert s["throughput_clips_per_s"] > 0
    from needletrack.models import load_model

    assert load_model(str(out / "best.safetensors")).cfg.name == "stnan_tiny"
