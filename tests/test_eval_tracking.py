"""The tracking evaluation: episode and drift definitions, the optical-flow peer, and a tiny run end to end."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from needletrack.eval.peers import FlowPropagator
from needletrack.eval.tracking import SetScore, drift, episodes

REPO = Path(__file__).resolve().parents[1]


def _bench(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_withdrawal_and_reentry_episodes():
    gt = [1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    # reported empty 2 frames late (frame 4), re-found 3 frames after re-entry (frame 9)
    pred = [1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1]
    ious = [None if not g else (0.8 if p else 0.0) for g, p in zip(gt, pred)]
    e = episodes(gt, pred, ious)
    assert e == {"withdrawals": 1, "withdrawals_reported": 1, "reentries": 1, "reentries_refound": 1}
    late = [1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1]                            # empty only 3 frames late
    e = episodes(gt, late, [None if not g else 0.8 for g in gt])
    assert e["withdrawals_reported"] == 0
    never = [1] * 11
    e = episodes(gt, never, [None if not g else 0.3 for g in gt])     # found again but IoU too low
    assert e["reentries_refound"] == 0
    assert episodes([0, 0, 1, 1], [0, 0, 1, 1], [None, None, 1, 1])["withdrawals"] == 0   # no needle before


def test_drift_ratio():
    ious = [0.8] * 20 + [0.4] * 10
    d = drift([ious], late=25, early=10)
    assert d["drift_ratio"] == pytest.approx(0.5) and d["iou_late"] == pytest.approx(0.4)


def test_set_score_pools_and_counts():
    g = np.zeros((3, 8, 8), bool)
    g[:, 2:4, :] = True
    p = g.copy()
    p[2, 2:4, :4] = False
    s = SetScore()
    s.add_sequence(list(g), list(p), spacing=[0.5, 0.5])
    r = s.result()
    assert r["iou"] == pytest.approx(24 / 32) and r["scored_frames"] == 2
    n = SetScore()
    n.add_negative_clip([True, False, False, False])
    assert n.result()["fp_frame_rate"] == 0.25


def test_flow_peer_follows_a_translated_texture():
    rng = np.random.default_rng(0)
    import cv2

    base = cv2.GaussianBlur(rng.uniform(0, 255, (140, 140)).astype(np.float32), (0, 0), 2.0)
    base = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    mask = np.zeros((120, 120), bool)
    mask[50:56, 20:90] = True
    prop = FlowPropagator()
    prop.step(base[:120, :120], mask)
    out = prop.step(base[3:123, 2:122])          # content moves up 3 px and left 2 px
    shifted = np.zeros_like(mask)
    shifted[47:53, 18:88] = True
    iou = (out & shifted).sum() / (out | shifted).sum()
    assert iou > 0.7


def test_tiny_harness_run_end_to_end(tmp_path, backgrounds_dir):
    et = _bench("eval_tracking")
    plan = {"needle": (1, 8), "still": (1, 16), "negatives": (1, 4), "stills_per_image": 2, "real_images": 2,
            "size": 96}
    sets = et.build_sets(tmp_path / "cache", plan, log=lambda *a: None)
    assert et.build_sets(tmp_path / "cache", plan, log=lambda *a: None) == sets          # cached
    et.run_config("tree", "", "default", "torch", sets, tmp_path / "tree", auto=True, log=lambda *a: None)
    et.flow_peer(sets, tmp_path / "flow")
    tree = et.score_run(sets, tmp_path / "tree")
    flow = et.score_run(sets, tmp_path / "flow")
    for r in (tree, flow):
        assert 0.0 <= r["clinical"]["iou"] <= 1.0 and r["clinical"]["scored_frames"] == 7
        assert r["ms_per_frame"]["median"] > 0
    assert "fp_frame_rate" in tree["real-stills"] and tree["real-stills"]["sequences"] == 2
    assert "auto_found_10f" in tree["clinical"] and "fp_frame_rate" not in flow.get("negatives", {})
    md = et.to_markdown({"command": "x", "when": "d", "machine": "m", "wall_s": 1.0, "sets_note": "n",
                         "runs": {"tree": {"config": "c", "scores": tree}, "flow": {"config": "f", "scores": flow}}})
    assert "| clinical: IoU |" in md and "| tree | flow |" in md
    # a later run adds its configuration to an earlier report on the same sets (--include); the plan holds tuples,
    # which the earlier report stored as JSON lists
    import json

    monkey = {"FULL": et.FULL, "build_sets": et.build_sets}
    try:
        et.FULL = plan
        et.build_sets = lambda cache, p, **kw: sets
        common = ["--no-auto", "--no-flow", "--engine", "torch"]
        assert et.main(["--config", "a::default", *common, "--out", str(tmp_path / "r1")]) == 0
        assert et.main(["--config", "b::default", "--include", str(tmp_path / "r1.json"), *common,
                        "--out", str(tmp_path / "r2")]) == 0
    finally:
        et.FULL, et.build_sets = monkey["FULL"], monkey["build_sets"]
    assert set(json.loads((tmp_path / "r2.json").read_text())["runs"]) == {"a", "b"}
