"""scripts/ship_default.py: the validation-split re-scoring matches the tracker's own rule, and the choice rule."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import torch

REPO = Path(__file__).resolve().parents[1]


def _ship():
    spec = importlib.util.spec_from_file_location("ship_default", REPO / "scripts" / "ship_default.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("threshold,min_score", [(0.5, 0.0), (0.45, 0.0), (0.5, 0.527), (0.3, 0.9)])
def test_rescoring_equals_tracking_with_the_same_settings(threshold, min_score):
    from needletrack.eval.metrics import MetricAccumulator
    from needletrack.models import build_model
    from needletrack.track import Tracker

    ship = _ship()
    torch.manual_seed(1)
    model = build_model("stnan_tiny").eval()
    rng = np.random.default_rng(3)
    seq = []
    for i in range(5):
        frame = rng.integers(0, 255, (64, 64), dtype=np.uint8)
        gt = np.zeros((64, 64), bool)
        if i != 3:                      # one empty frame so the gate's empty-frame accuracy is exercised
            gt[30:33, 8 + i:50] = True
        seq.append((frame, gt))
    # no memory writes after the first frame, so gating cannot change what later frames see
    frames = []
    for _, s in [("p", seq)]:
        t = Tracker(model, min_score=0.0, mem_min_score=1.01, policy="mask")
        for i, (f, gt) in enumerate(s):
            frames.append((t.step(f, mask=gt if i == 0 else None).prob.astype("float16"), gt, i == 0))
    rescored = ship.score(frames, min_score, threshold=threshold)

    acc = MetricAccumulator()
    t = Tracker(model, threshold=threshold, min_score=min_score, mem_min_score=1.01, policy="mask")
    for i, (f, gt) in enumerate(seq):
        acc.update(t.step(f, mask=gt if i == 0 else None).mask, gt, first=i == 0)
    direct = acc.result()
    assert rescored["iou"] == pytest.approx(direct["iou"], abs=1e-3)
    assert rescored["empty_frame_accuracy"] == direct["empty_frame_accuracy"]


def test_choice_prefers_iou_among_pairs_that_meet_the_empty_frame_target():
    ship = _ship()
    rows = [
        {"threshold": 0.5, "min_score": 0.0, "iou": 0.80, "empty_frame_accuracy": 0.60},
        {"threshold": 0.4, "min_score": 0.8, "iou": 0.74, "empty_frame_accuracy": 0.98},
        {"threshold": 0.5, "min_score": 0.9, "iou": 0.70, "empty_frame_accuracy": 1.00},
    ]
    assert ship.choose(rows, 0.97)["min_score"] == 0.8
    assert ship.choose(rows, 0.99)["min_score"] == 0.9
    # nobody meets the target: the best IoU + empty-frame accuracy
    assert ship.choose(rows, 1.01)["min_score"] == 0.8


def test_segment_tuning_runs_the_tracker_per_pair(monkeypatch):
    ship = _ship()

    import numpy as np

    from needletrack.geometry import line_mask
    from needletrack.models import build_model

    monkeypatch.setattr(ship, "SEGMENT_THRESHOLDS", (0.3, 0.5))
    monkeypatch.setattr(ship, "SEGMENT_SCORES", (0.7,))
    rng = np.random.default_rng(0)
    seq = []
    for k in range(4):
        f = rng.integers(0, 80, (64, 64)).astype(np.uint8)
        m = line_mask((64, 64), (0, 20), (30 + 3 * k, 40), 3)
        f[m] = 230
        seq.append((f, m))
    rows = ship.tune_segment(build_model("stnan_tiny").eval(), [("clinical", seq)])
    assert [(r["threshold"], r["segment_min_score"]) for r in rows] == [(0.3, 0.7), (0.5, 0.7)]
    assert all(0.0 <= r["iou"] <= 1.0 for r in rows)
    assert ship.choose(rows, 0.0) in rows


def _script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_val_weights_scores_files_on_a_configs_validation_sets(tmp_path, capsys):
    """scripts/val_weights.py: the same figure as training's own validation for the same weights; a missing file is
    a one-line error with exit code 2."""
    from needletrack.models import build_model
    from needletrack.models.weights import load_model, save_model
    from needletrack.train.config import load_config
    from needletrack.train.validation import build_val_set, evaluate_model

    torch.manual_seed(0)
    w = save_model(build_model("stnan_tiny").eval(), tmp_path / "tiny.safetensors")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text("size: 64\nval: {sequences: 1, frames: 4, presets: [easy], backgrounds: null}\n")
    vw = _script("val_weights")
    assert vw.main([str(cfg_path), str(w)]) == 0
    line = capsys.readouterr().out.strip()
    cfg = load_config(cfg_path)
    ref = evaluate_model(load_model(w).eval(), build_val_set(cfg.val, (64, 64)), cfg.val, "cpu")["overall"]
    assert line.startswith(f"{w}: IoU {ref['iou']:.4f}"), line
    assert vw.main([str(cfg_path), str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no weights file" in err
