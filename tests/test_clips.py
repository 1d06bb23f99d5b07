"""Clip sources, the clip data set and the per-step batch sampler (needletrack.data.clips)."""
import numpy as np
import pytest

from needletrack.data.clips import (ClipDataset, FolderClips, Stage0Clips, StepBatchSampler, build_source,
                                    _draw_gaps)
from needletrack.errors import InputError
from toy_data import make_toy_dataset


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toy"), sequences=2, frames=30, size=64, seed=1)


def test_folder_clips_follow_the_gap_rule(toy):
    src = FolderClips(toy, gap=(5, 10))
    for seed in range(10):
        c = src.sample(np.random.default_rng(seed), (64, 64), 5)
        assert c.frames.shape == (5, 64, 64) and c.masks.shape == (5, 64, 64)
        gaps = np.diff(c.info["frames"])
        assert ((gaps >= 5) & (gaps <= 10)).all()
        # frames and masks come from the same source frames and the same crop: the bright needle is the mask
        for f, m in zip(c.frames, c.masks):
            if m.sum() > 10:
                bright = f > 130
                assert (bright & m).sum() / (bright | m).sum() > 0.6


def test_gaps_shrink_to_fit_short_sequences():
    assert sum(_draw_gaps(np.random.default_rng(0), 4, (5, 10), 12)) <= 12
    assert _draw_gaps(np.random.default_rng(0), 4, (5, 10), 3) is None
    g = _draw_gaps(np.random.default_rng(0), 4, (5, 10), 100)
    assert all(5 <= x <= 10 for x in g)


@pytest.fixture(scope="module")
def toy_short(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toy_short"), sequences=2, frames=10, size=64, seed=2)


def test_dataset_is_a_pure_function_of_seed_and_index(toy_short):
    src, _ = build_source({"kind": "folder", "root": str(toy_short), "gap": [1, 2], "zoom": [1.0, 1.0]})
    ds = ClipDataset([src], 64, n_frames=5, seed=3, reverse_prob=0.5)
    a, b = ds[17], ds[17]
    assert np.array_equal(a["frames"].numpy(), b["frames"].numpy())
    assert a["frames"].shape == (5, 1, 64, 64) and a["masks"].shape == (5, 1, 64, 64)
    assert 0.0 <= float(a["frames"].min()) and float(a["frames"].max()) <= 1.0
    assert set(np.unique(a["masks"].numpy())) <= {0.0, 1.0}
    assert not np.array_equal(ds[18]["frames"].numpy(), a["frames"].numpy())
    other = ClipDataset([src], 64, n_frames=5, seed=4)
    assert not np.array_equal(other[17]["frames"].numpy(), a["frames"].numpy())
    # random time reversal: some clips run backwards (the toy needle then shrinks)
    clips = [ds.clip(i) for i in range(20)]
    grows = {bool(c.info.get("reversed")): [] for c in clips}
    for c in clips:
        grows[bool(c.info.get("reversed"))].append(int(c.masks[-1].sum()) - int(c.masks[0].sum()))
    assert max(grows[True]) < 0 < min(grows[False])


def test_sources_are_mixed_by_weight_and_step_window(toy):
    a, _ = build_source({"kind": "folder", "root": str(toy), "weight": 3})
    b, _ = build_source({"kind": "folder", "root": str(toy), "weight": 1, "steps": [0, 10]})
    ds = ClipDataset([a, b], 64, n_frames=3, seed=0, samples_per_step=2)
    picks = [ds.clip(i).info["source_index"] for i in range(0, 60)]  # 2 samples per step: b only in steps < 10
    assert 1 in picks[:20] and 0 in picks[:20]
    assert all(s == 0 for s in picks[20:])


def test_stage0_pseudo_clips_move_image_and_mask_together(tmp_path):
    import cv2

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    img = np.full((120, 120), 40, np.uint8)
    msk = np.zeros((120, 120), np.uint8)
    cv2.circle(img, (60, 60), 14, 220, -1)
    cv2.circle(msk, (60, 60), 14, 255, -1)
    cv2.imwrite(str(tmp_path / "images" / "a.png"), img)
    cv2.imwrite(str(tmp_path / "masks" / "a.png"), msk)
    src = Stage0Clips(tmp_path)
    rng = np.random.default_rng(0)
    moved = 0
    for _ in range(5):
        c = src.sample(rng, (96, 96), 5)
        assert c.frames.shape == (5, 96, 96) and c.masks.dtype == bool and c.frames.dtype == np.uint8
        area = c.masks.reshape(5, -1).sum(1)
        assert area.min() > 0 and area.max() <= 1.6 * area.min()  # same object, smoothly deformed
        for f, m in zip(c.frames, c.masks):
            bright = f > 130
            assert (bright & m).sum() / (bright | m).sum() > 0.8  # warped by the same map
        cen = np.array([np.argwhere(m).mean(0) for m in c.masks])
        assert np.abs(np.diff(cen, axis=0)).max() < 0.15 * 96
        moved += np.abs(cen[-1] - cen[0]).max() > 1.0
    assert moved >= 3


def test_stage0_on_real_backgrounds(backgrounds_dir):
    src = Stage0Clips(backgrounds_dir)
    rng = np.random.default_rng(0)
    clips = [src.sample(rng, (96, 96), 5) for _ in range(6)]
    assert all(c.frames.shape == (5, 96, 96) for c in clips)
    assert sum(c.masks[0].any() for c in clips) >= 3  # mostly images with a marked structure


def test_missing_optional_folders_are_skipped_and_required_ones_fail(tmp_path):
    s, note = build_source({"kind": "stage0", "dir": str(tmp_path / "absent")})
    assert s is None and "absent" in note
    with pytest.raises(InputError, match="no such folder"):
        build_source({"kind": "folder", "root": str(tmp_path / "absent")})
    with pytest.raises(ValueError, match="unknown"):
        build_source({"kind": "nope"})
    with pytest.raises(ValueError, match="colour"):
        build_source({"kind": "folder", "root": str(tmp_path), "colour": 1})


def test_step_batch_sampler_is_disjoint_across_ranks_and_resumable():
    r0 = list(StepBatchSampler(2, 0, 3, rank=0, world_size=2))
    r1 = list(StepBatchSampler(2, 0, 3, rank=1, world_size=2))
    flat = [i for b in r0 + r1 for i in b]
    assert len(flat) == len(set(flat)) == 12 and sorted(flat) == list(range(12))
    assert list(StepBatchSampler(2, 1, 3, 0, 2)) == r0[1:]


def test_sim_clips():
    import needletrack.sim  # noqa: F401 - a required dependency: a broken install fails here, it does not skip
    from needletrack.data.clips import SimClips

    src = SimClips({"easy": 1, "hard": 1}, gap=(5, 6))
    c = src.sample(np.random.default_rng(0), (256, 256), 5)
    assert c.frames.shape == (5, 256, 256) and c.masks.shape == (5, 256, 256)
    assert c.info["seed"] >= 2 ** 31 and c.info["gap"] in (5, 6)
    c2 = src.sample(np.random.default_rng(0), (256, 256), 5)
    assert np.array_equal(c.frames, c2.frames)


def test_sim_negatives_and_episodes():
    import numpy as np

    from needletrack.data.clips import SimClips

    src = SimClips(presets=["hard"], absent_prob=1.0, gap=(1, 2))
    c = src.sample(np.random.default_rng(0), (64, 64), 5)
    assert c.masks.shape == (5, 64, 64) and not c.masks.any() and c.info["needle"] == "absent"
    ep = SimClips(presets=["clinical"], episode_prob=1.0, gap=(1, 2)).sample(np.random.default_rng(1), (64, 64), 5)
    assert ep.info["episode"] and ep.info["needle"] == "moving"


def test_real_negative_clips(backgrounds_dir):
    import numpy as np

    from needletrack.data.clips import build_source

    spec, why = build_source({"kind": "negatives", "weight": 0.2, "liver_prob": 0.5})
    assert spec is not None, why
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(6):
        c = spec.source.sample(rng, (48, 64), 4)
        assert c.frames.shape == (4, 48, 64) and c.frames.dtype == np.uint8 and not c.masks.any()
        kinds.add(c.info["source"])
    assert kinds <= {"liver_sweep", "still"} and kinds


def test_sim_clips_over_the_liver_sweep():
    from needletrack.data import splits
    from needletrack.data.clips import build_source

    if not splits.liver_frames("train"):
        pytest.skip("the real liver sweep (../shared/data/us_cines/liver_sweep) is not present")
    spec, _ = build_source({"kind": "sim", "presets": {"clinical": 1}, "moving_prob": 1.0, "gap": [2, 3]})
    c = spec.source.sample(np.random.default_rng(3), (96, 96), 4)
    assert c.info["moving"] and c.frames.shape == (4, 96, 96)
    # the background is the real sweep, which moves: consecutive frames differ beyond the needle
    off = ~(c.masks[0] | c.masks[1])
    assert np.abs(c.frames[0].astype(int) - c.frames[1])[off].mean() > 1.0
    with pytest.raises(ValueError):
        build_source({"kind": "sim", "moving_prob": 1.5})
