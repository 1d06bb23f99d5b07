"""The training loop end to end on a tiny model and a toy data set folder (CPU, a few steps)."""
import csv
import json

import pytest
import torch
import yaml

from needletrack.cli import main as cli_main
from needletrack.train.loop import load_checkpoint, train
from toy_data import make_toy_dataset


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toy"), sequences=2, frames=10, size=64, seed=3)


def tiny_cfg(root, **over):
    cfg = {
        "seed": 7, "model": "stnan_tiny", "size": 64, "steps": 4, "batch_size": 2, "log_every": 1,
        "clip": {"frames": 3, "gap": [1, 3]},
        "data": {"sources": [{"kind": "folder", "root": str(root)}], "num_workers": 0},
        "augment": {"p_speckle": 0.5, "p_overlay": 0.5},
        "optim": {"lr": 2e-3}, "schedule": {"warmup": 2, "decay": "cosine"},
        "loss": {"bce": 1.0, "dice": 0.5},
        "val": {"root": str(root), "every": 2}, "checkpoint_every": 0, "tensorboard": False,
    }
    cfg.update(over)
    return cfg


def test_train_writes_outputs(toy, tmp_path):
    from needletrack.models import load_model

    out = tmp_path / "run"
    s = train(tiny_cfg(toy), out, device="cpu", progress=False, command="needletrack train tiny.yaml")
    assert s["finished"] and s["steps"] == 4 and s["seed"] == 7 and s["command"] == "needletrack train tiny.yaml"
    for name in ("best.safetensors", "last.safetensors", "checkpoint.pt", "train_log.csv", "val_log.csv",
                 "val_curve.png", "summary.json", "config.yaml"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*partial*"))  # atomic writes leave no temporaries
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["step"] in (2, 4) and 0 <= summary["best"]["val"]["overall"]["iou"] <= 1
    rows = list(csv.DictReader((out / "train_log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] < lrs[1] and lrs[2] > lrs[3]  # warm-up, then decay
    val = list(csv.DictReader((out / "val_log.csv").open()))
    assert [int(r["step"]) for r in val] == [2, 4]
    model = load_model(str(out / "best.safetensors"))
    assert model.cfg.name == "stnan_tiny" and model.is_memory_model
    assert (out / "val_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_equals_uninterrupted(toy, tmp_path):
    cfg = tiny_cfg(toy, val={"root": str(toy), "every": 0})
    train(cfg, tmp_path / "a", device="cpu", progress=False)
    s1 = train(cfg, tmp_path / "b", device="cpu", progress=False, stop_after=2)
    assert not s1["finished"] and s1["steps"] == 2
    # a second run without --resume refuses to overwrite the checkpoint
    with pytest.raises(Exception, match="--resume"):
        train(cfg, tmp_path / "b", device="cpu", progress=False)
    s2 = train(cfg, tmp_path / "b", device="cpu", progress=False, resume=True)
    assert s2["finished"] and s2["steps"] == 4
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert a["step"] == b["step"] == 4
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    la = [r["loss"] for r in json.loads(a["train_rows"])]
    lb = [r["loss"] for r in json.loads(b["train_rows"])]
    assert la == lb and len(la) == 4


def test_weight_average_resumes_exactly_and_is_what_gets_saved(toy, tmp_path):
    from needletrack.models.weights import load_model

    cfg = tiny_cfg(toy, val={"root": str(toy), "every": 0}, ema=0.9)
    train(cfg, tmp_path / "a", device="cpu", progress=False)
    train(cfg, tmp_path / "b", device="cpu", progress=False, stop_after=2)
    train(cfg, tmp_path / "b", device="cpu", progress=False, resume=True)
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for k, v in a["ema"].items():
        assert torch.equal(v, b["ema"][k]), k
    # the average lags the raw weights, and it is the average that is saved and validated
    raw, avg = a["model"], a["ema"]
    moved = [k for k in raw if raw[k].is_floating_point() and not torch.equal(raw[k], avg[k])]
    assert moved
    last = load_model(str(tmp_path / "a" / "last.safetensors")).state_dict()
    assert all(torch.equal(last[k], avg[k]) for k in moved)


def test_cli_train_and_bad_input(toy, tmp_path, capsys):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_cfg(toy, steps=2, val={"root": str(toy), "every": 0})))
    rc = cli_main(["train", str(cfg_path), "--out", str(tmp_path / "o"), "--device", "cpu", "--no-progress",
                   "--steps", "1"])
    assert rc == 0
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["steps"] == 1

    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: 3\nlearning_rate: 0.1\n")
    capsys.readouterr()
    assert cli_main(["train", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml" in err[0] and "learning_rate" in err[0]

    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [3\n")
    assert cli_main(["train", str(broken)]) == 2
    assert cli_main(["train", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "Traceback" not in err

    nofolder = tmp_path / "nofolder.yaml"
    nofolder.write_text(yaml.safe_dump(tiny_cfg(tmp_path / "nope", steps=1)))
    assert cli_main(["train", str(nofolder), "--out", str(tmp_path / "y"), "--device", "cpu"]) == 2
    assert "nope" in capsys.readouterr().err


def test_config_validation():
    from needletrack.errors import InputError
    from needletrack.train.config import load_config, schedule_lr

    cfg = load_config(None, {"steps": 100, "schedule": {"warmup": 10, "decay": "step", "milestones": [0.5, 80]}})
    f = [schedule_lr(cfg, s) for s in (0, 5, 10, 49, 50, 79, 80, 99)]
    assert f[0] < f[1] < f[2] == 1.0 == f[3]
    assert f[4] == pytest.approx(0.2) == f[5] and f[6] == pytest.approx(0.04) == f[7]
    for bad in ({"steps": 0}, {"clip": {"gap": [5, 2]}}, {"optim": {"name": "sgd"}}, {"augment": {"p_wobble": 1}},
                {"val": {"seed": 2 ** 31}}, {"size": 100}, {"data": {"sources": []}}):
        with pytest.raises(InputError):
            load_config(None, bad)


def test_train_config_is_typed_and_old_configs_still_load():
    from pathlib import Path

    from needletrack.data.augment import AugmentConfig
    from needletrack.train.config import TrainConfig, load_config

    shipped = sorted((Path(__file__).resolve().parents[1] / "configs" / "train").glob("*.yaml"))
    assert shipped
    for p in shipped:
        cfg = load_config(p)
        assert isinstance(cfg, TrainConfig) and TrainConfig.from_dict(cfg.to_dict()) == cfg, p
        assert yaml.safe_load(yaml.safe_dump(cfg.to_dict())) == cfg.to_dict()   # plain data: config.yaml
    # the validation keys of the old second streaming loop still load (validation runs the Tracker now)
    old = load_config(None, {"val": {"mem_every": 5, "mem_frames": 9, "top_k": 20, "use_last": False,
                                     "seed": 1, "frame_step": 2}})
    assert old.val.mem_frames == 9 and old.val.tracker == {}
    # YAML 1.1 reads 3e-4 as a string and `off` as false: typed once, here
    cfg = load_config(None, {"optim": {"lr": "3e-4"}, "amp": False, "augment": {"enabled": False}})
    assert cfg.optim.lr == 3e-4 and cfg.amp == "off" and cfg.augment == AugmentConfig.off()
    assert cfg.lr_at(cfg.steps - 1) < cfg.lr_at(cfg.schedule.warmup)
