import json
import math

import numpy as np
import pytest

from needletrack.eval.metrics import MetricAccumulator, RESULT_KEYS, evaluate_dirs, scores_from_counts
from needletrack.geometry import line_mask


def _random_masks(rng, n, h=24, w=32):
    preds = rng.random((n, h, w)) < rng.uniform(0.05, 0.5)
    gts = rng.random((n, h, w)) < rng.uniform(0.05, 0.5)
    return preds, gts


def test_pooled_scores_match_monai_confusion_matrix():
    import torch
    from monai.metrics import ConfusionMatrixMetric

    rng = np.random.default_rng(0)
    preds, gts = _random_masks(rng, 7)
    acc = MetricAccumulator()
    acc.update(preds[0], gts[0], first=True)  # never scored
    for p, g in zip(preds[1:], gts[1:]):
        acc.update(p, g)
    r = acc.result()
    m = ConfusionMatrixMetric(include_background=True, metric_name=["precision", "recall", "f1 score",
                                                                    "threat score"],
                              compute_sample=False, reduction="sum")
    m(y_pred=torch.from_numpy(preds[1:, None].astype(np.float32)),
      y=torch.from_numpy(gts[1:, None].astype(np.float32)))
    prec, rec, f1, ts = [float(t.reshape(-1)[0]) for t in m.aggregate()]
    assert r["precision"] == pytest.approx(prec, rel=1e-6)
    assert r["recall"] == pytest.approx(rec, rel=1e-6)
    assert r["f1"] == pytest.approx(f1, rel=1e-6)
    assert r["iou"] == pytest.approx(ts, rel=1e-6)
    assert r["dice"] == pytest.approx(f1, rel=1e-6)
    assert r["frames"] == 6


def test_per_frame_iou_matches_monai_dice():
    import torch
    from monai.metrics import DiceMetric

    rng = np.random.default_rng(1)
    preds, gts = _random_masks(rng, 5)
    gts[2] = False  # an empty-GT frame is excluded from the per-frame mean
    acc = MetricAccumulator()
    for p, g in zip(preds, gts):
        acc.update(p, g)
    dm = DiceMetric(include_background=True, reduction="none")
    d = dm(y_pred=torch.from_numpy(preds[:, None].astype(np.float32)),
           y=torch.from_numpy(gts[:, None].astype(np.float32))).numpy().reshape(-1)
    keep = [i for i in range(5) if gts[i].any()]
    ious = [d[i] / (2 - d[i]) for i in keep]  # IoU = Dice / (2 - Dice) frame by frame
    assert acc.result()["per_frame_iou"] == pytest.approx(float(np.mean(ious)), rel=1e-6)
    assert acc.result()["empty_frame_accuracy"] == (0.0 if preds[2].any() else 1.0)


def test_edge_cases_by_hand():
    z = np.zeros((4, 4), bool)
    one = z.copy()
    one[1, 1] = True
    # both empty: perfect, no per-frame IoU, empty frame predicted empty
    a = MetricAccumulator()
    a.update(z, z)
    r = a.result()
    assert (r["iou"], r["dice"], r["precision"], r["recall"], r["f1"]) == (1.0, 1.0, 1.0, 1.0, 1.0)
    assert r["per_frame_iou"] is None and r["empty_frame_accuracy"] == 1.0 and r["tip_error_px"] is None
    # empty GT, something predicted: all zero, empty frame missed
    a = MetricAccumulator()
    a.update(one, z)
    r = a.result()
    assert (r["iou"], r["dice"], r["precision"], r["recall"], r["f1"]) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert r["empty_frame_accuracy"] == 0.0 and r["per_frame_iou"] is None
    # empty prediction, needle in GT: zero, per-frame IoU 0, no tip error
    a = MetricAccumulator()
    a.update(z, one)
    r = a.result()
    assert r["iou"] == 0.0 and r["recall"] == 0.0 and r["precision"] == 0.0 and r["per_frame_iou"] == 0.0
    assert r["empty_frame_accuracy"] is None and r["tip_error_px"] is None
    # only the first frame: nothing scored
    a = MetricAccumulator()
    a.update(one, z, first=True)
    assert a.result()["frames"] == 0 and a.result()["iou"] == 1.0


def test_pooled_not_mean_of_frames():
    a = MetricAccumulator()
    g1 = np.zeros((10, 10), bool)
    g1[:, :5] = True  # 50 px, predicted exactly
    g2 = np.zeros((10, 10), bool)
    g2[0, 0] = True  # 1 px, missed
    a.update(g1, g1)
    a.update(np.zeros_like(g2), g2)
    r = a.result()
    assert r["iou"] == pytest.approx(50 / 51)
    assert r["per_frame_iou"] == pytest.approx(0.5)
    assert scores_from_counts(50, 0, 1)["iou"] == pytest.approx(50 / 51)


def test_tip_and_angle_error_with_spacing():
    gt = line_mask((100, 120), (0, 10), (80, 50), 3)
    pred = line_mask((100, 120), (0, 10), (86, 53), 3)  # same line, tip ~6.7 px further
    a = MetricAccumulator(pixel_spacing_mm=[0.2, 0.1])
    a.update(pred, gt)
    r = a.result()
    assert r["tip_error_px"] == pytest.approx(math.hypot(6, 3), abs=1.0)
    assert r["tip_error_mm"] == pytest.approx(math.hypot(6 * 0.1, 3 * 0.2), abs=0.15)
    assert r["angle_error_deg"] < 1.0
    b = MetricAccumulator()
    b.update(pred, gt)
    assert b.result()["tip_error_mm"] is None


def test_merge_equals_single_accumulator():
    rng = np.random.default_rng(3)
    preds, gts = _random_masks(rng, 6)
    whole = MetricAccumulator()
    x, y = MetricAccumulator(), MetricAccumulator()
    for i in range(6):
        whole.update(preds[i], gts[i])
        (x if i < 3 else y).update(preds[i], gts[i])
    merged = MetricAccumulator().merge(x).merge(y).result()
    assert merged.keys() == whole.result().keys()
    for k, v in whole.result().items():
        assert merged[k] == (v if v is None else pytest.approx(v, rel=1e-12)), k


def _write_seq(root, name, masks, meta=None):
    from needletrack.data.folder import SequenceWriter

    with SequenceWriter(root, name, meta or {}) as w:
        for m in masks:
            w.add(np.full(m.shape, 100, np.uint8), m)


def _write_pred(folder, masks, start=0):
    from needletrack.utils import write_png_atomic

    folder.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(masks):
        if i >= start:
            write_png_atomic(folder / f"{i:05d}.png", m.astype(np.uint8) * 255)


def test_evaluate_dirs_agrees_with_independent_numpy(tmp_path):
    rng = np.random.default_rng(4)
    gt_a, gt_b = rng.random((4, 16, 20)) < 0.3, rng.random((3, 16, 20)) < 0.2
    pr_a, pr_b = rng.random((4, 16, 20)) < 0.3, rng.random((3, 16, 20)) < 0.2
    _write_seq(tmp_path / "gt", "a", gt_a, {"pixel_spacing_mm": [0.1, 0.1]})
    _write_seq(tmp_path / "gt", "b", gt_b)
    _write_pred(tmp_path / "pred" / "a" / "masks", pr_a)
    _write_pred(tmp_path / "pred" / "b", pr_b, start=1)  # flat layout, first frame absent
    res = evaluate_dirs(tmp_path / "pred", tmp_path / "gt")
    p = np.concatenate([pr_a[1:], pr_b[1:]])
    g = np.concatenate([gt_a[1:], gt_b[1:]])
    tp, fp, fn = (p & g).sum(), (p & ~g).sum(), (~p & g).sum()
    assert res["overall"]["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert res["overall"]["precision"] == pytest.approx(tp / (tp + fp))
    assert res["overall"]["frames"] == 5
    assert set(RESULT_KEYS) <= set(res["overall"]) and set(res["sequences"]) == {"a", "b"}
    ta = (pr_a[1:] & gt_a[1:]).sum()
    assert res["sequences"]["a"]["dice"] == pytest.approx(
        2 * ta / (pr_a[1:].sum() + gt_a[1:].sum()))
    json.dumps(res)


def test_sparse_ground_truth_scores_only_annotated_frames(tmp_path):
    gt = (np.random.default_rng(5).random((5, 12, 14)) < 0.3)
    _write_seq(tmp_path / "gt", "s", gt)
    for i in (1, 3):
        (tmp_path / "gt" / "s" / "masks" / f"{i:05d}.png").unlink()
    _write_pred(tmp_path / "pred" / "s", gt[[0, 0, 0, 0, 0]])  # every frame predicted as GT frame 0
    res = evaluate_dirs(tmp_path / "pred", tmp_path / "gt")["overall"]
    p, g = gt[[0, 0]], gt[[2, 4]]
    tp = (p & g).sum()
    assert res["frames"] == 2
    assert res["iou"] == pytest.approx(tp / ((p | g).sum()))
