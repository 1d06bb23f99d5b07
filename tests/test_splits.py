"""The one splits module: frozen real-data splits and named simulated sets."""
from __future__ import annotations

import numpy as np
import pytest

from needletrack.data import splits
from needletrack.data.clips import TRAIN_SIM_SEED_BASE


def test_background_splits_are_disjoint_and_hold_out_whole_groups():
    f = splits.split_file()["us_backgrounds"]
    tr, va, te = (set(f[s]) for s in ("train", "val", "test"))
    assert tr and va and te
    assert not (tr & va) and not (tr & te) and not (va & te)
    # nerve (usgra) and muscle (dltrack) images never train nor tune
    for name in tr | va:
        assert name.startswith("busi_"), name
    assert any(n.startswith("usgra_") for n in te) and any(n.startswith("dltrack_") for n in te)


def test_background_split_covers_the_shared_index(backgrounds_dir):
    import json

    names = {e["name"] for e in json.loads((backgrounds_dir / "index.json").read_text())}
    f = splits.split_file()["us_backgrounds"]
    assert names == set(f["train"]) | set(f["val"]) | set(f["test"])
    got = splits.background_split("val", backgrounds_dir)
    assert sorted(m["name"] for _, _, m in got) == sorted(f["val"])


def test_liver_blocks_are_contiguous_disjoint_with_gaps():
    blocks = sorted((a, b, s) for s in splits.SPLITS for a, b in splits.liver_blocks(s))
    for (a0, b0, _), (a1, b1, _) in zip(blocks, blocks[1:]):
        assert a0 < b0 <= a1 - 2 < b1      # a guard gap of frames between blocks
    assert {s for *_, s in blocks} == set(splits.SPLITS)


def test_a_users_own_folder_is_not_filtered():
    fake = [(np.zeros((40, 40), np.uint8), np.zeros((40, 40), bool), {"name": "my_scan_1"})]
    assert splits.filter_backgrounds(fake, "train") == fake
    shared = [(np.zeros((40, 40), np.uint8), np.zeros((40, 40), bool), {"name": n})
              for n in ("busi_benign_001", "usgra_0000")]
    kept = {m["name"] for *_, m in splits.filter_backgrounds(shared, "train")}
    assert "usgra_0000" not in kept


def test_set_seeds_can_never_be_drawn_by_training():
    seen = set()
    for name, s in splits.SIM_SETS.items():
        seeds = {s.sequence_seed(i) for i in range(64)}     # every set size the harness uses
        assert max(seeds) < TRAIN_SIM_SEED_BASE
        assert not (seeds & seen), name
        seen |= seeds
    assert {s.split for s in splits.SIM_SETS.values()} == set(splits.EVAL_SPLITS)


def test_needle_sets_start_at_the_first_visible_needle_and_are_deterministic():
    a = list(splits.iter_set("test/hard-ep", 2, 6, size=64))
    b = list(splits.iter_set("test/hard-ep", 2, 6, size=64))
    assert len(a) == 2
    for sa, sb in zip(a, b):
        assert sa.masks[0].sum() >= 4                         # prompt frame shows the needle
        assert all(np.array_equal(x, y) for x, y in zip(sa.frames, sb.frames))
        assert len(sa.frames) == 6 and sa.meta["set"] == "test/hard-ep"


def test_negatives_have_no_needle_and_still_needle_holds():
    neg = next(splits.iter_set("test/negatives", 1, 5, size=64))
    assert not any(m.any() for m in neg.masks)
    still = next(splits.iter_set("test/still", 1, 12, size=96))
    tips = np.array([n["tip_true"] for n in still.needle])
    moving = next(splits.iter_set("test/clinical", 1, 12, size=96))
    # the still needle moves only by tremor and probe drift (sub-pixel to a few px)
    assert np.ptp(tips, axis=0).max() < 4.0
    assert all(m.any() for m in still.masks)
    assert moving.meta["set"] == "test/clinical"


def test_bench_set_is_the_bench_scene():
    s = next(splits.iter_set("val/bench", 1, 4, size=96))
    assert s.meta["set"] == "val/bench" and s.masks[0].any()
    # water or gel above the block: the top rows are darker than the block below
    f = np.asarray(s.frames[0], float)
    assert f[10:25].mean() < f[-30:-10].mean()


def test_moving_set_is_drawn_over_the_splits_liver_frames():
    blocks = splits.liver_frames("val")
    if not blocks:
        pytest.skip("the liver sweep (../shared/data/us_cines/liver_sweep) is not present")
    s = next(splits.iter_set("val/clinical+moving", 1, 6, size=96))
    assert s.meta["set"] == "val/clinical+moving" and s.masks[0].any() and len(s.frames) == 6
    assert "moving window" in s.meta["source"]
    # real probe motion: the picture changes between frames away from the needle (a still synthetic scene would not)
    away = ~(np.asarray(s.masks[0]) | np.asarray(s.masks[1]))
    assert np.abs(np.asarray(s.frames[1], float) - np.asarray(s.frames[0], float))[away].mean() > 2.0
    # the other sets keep their seeds (the new kind has its own offset)
    assert len({x.seed for x in splits.SIM_SETS.values()}) == len(splits.SIM_SETS)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError):
        splits.sim_set("test/nope")
    with pytest.raises(ValueError):
        splits.background_names("holdout")
