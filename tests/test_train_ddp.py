"""`needletrack train` under torchrun: 2 CPU processes (gloo), DDP replicas must end identical."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from toy_data import make_toy_dataset


@pytest.mark.slow
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
    # a driver that runs `needletrack train` and, where the loop takes its replica digest at the end, also saves
    # each rank's own weights: the test compares the two replicas itself instead of trusting the loop's flag
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import os, sys, torch\n"
        "import needletrack.train.loop as L\n"
        "orig = L.weights_digest\n"
        "def spy(model, buffers=False):\n"
        "    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}\n"
        "    torch.save(sd, os.path.join(os.environ['REPLICA_DIR'], f\"replica{os.environ['RANK']}.pt\"))\n"
        "    return orig(model, buffers)\n"
        "L.weights_digest = spy\n"
        "from needletrack.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", REPLICA_DIR=str(tmp_path))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(driver), "train", str(cfg_path), "--out", str(out), "--device", "cpu", "--no-progress"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["world_size"] == 2 and s["steps"] == 3 and s["finished"]
    assert len(s["replica_digests"]) == 2

    import torch

    def load(p):                                                # DDP's wrapper prefixes "module."
        return {k.removeprefix("module."): v for k, v in torch.load(p, weights_only=True).items()}

    r0, r1 = load(tmp_path / "replica0.pt"), load(tmp_path / "replica1.pt")
    assert r0.keys() == r1.keys() and len(r0) > 10
    different = [k for k in r0 if not torch.equal(r0[k], r1[k])]
    assert not different, f"replicas differ in {different[:5]}"
    assert s["replicas_identical"] is True                      # and the loop's own flag agrees
    from safetensors.torch import load_file                     # what was saved is the replicas' weights
    last = load_file(str(out / "last.safetensors"))
    shared = [k for k in last if k in r0 and last[k].dtype.is_floating_point]
    assert shared and all(torch.equal(last[k], r0[k]) for k in shared)

    assert s["command"].startswith("torchrun --nproc_per_node=2")
    # each rank trained on its own data: the global batch is 2 ranks x 2 clips
    assert s["throughput_clips_per_s"] > 0
    from needletrack.models import load_model

    assert load_model(str(out / "best.safetensors")).cfg.name == "stnan_tiny"
