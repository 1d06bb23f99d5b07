"""Ultrasound augmentation keeps masks aligned with frames and clips coherent."""
import numpy as np
import pytest

from needletrack.data.augment import AugmentConfig, augment_clip
from toy_data import toy_sequence


def _clip(seed=0, t=4, size=64):
    return toy_sequence(t, size, np.random.default_rng(seed))


def _geometry_only(**kw):
    cfg = AugmentConfig.off()
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


@pytest.mark.parametrize("seed", range(6))
def test_geometry_keeps_masks_on_the_needle(seed):
    frames, masks = _clip(seed)
    cfg = _geometry_only(p_flip=0.5, p_affine=1.0, p_border=0.5, p_sector=0.5, rotate_deg=20, translate=0.1)
    f, m = augment_clip(frames, masks, np.random.default_rng(seed), cfg)
    assert f.shape == frames.shape and m.shape == masks.shape and f.dtype == np.uint8 and m.dtype == bool
    for i in range(len(f)):
        if m[i].sum() < 10:
            continue
        bright = f[i] > 130  # the toy needle is ~210 on a ~50 background
        assert _iou(bright, m[i]) > 0.6, (seed, i)


def test_full_augmentation_keeps_needle_brighter_where_the_mask_is():
    for seed in range(8):
        frames, masks = _clip(seed)
        f, m = augment_clip(frames, masks, np.random.default_rng(100 + seed), AugmentConfig(p_overlay=0.0))
        for i in range(len(f)):
            if m[i].sum() >= 10:
                inside, outside = f[i][m[i]].mean(), f[i][~m[i]].mean()
                assert inside > outside + 20, (seed, i, inside, outside)


def test_geometry_is_shared_by_all_frames_of_a_clip():
    frames, masks = _clip(1, t=1)
    frames = np.repeat(frames, 5, 0)
    masks = np.repeat(masks, 5, 0)
    for seed in range(5):
        f, m = augment_clip(frames, masks, np.random.default_rng(seed), AugmentConfig(p_affine=1, p_flip=0.5))
        assert all(np.array_equal(m[0], m[i]) for i in range(5))
        # intensity noise differs per frame, structure does not
        assert np.corrcoef(f[0].ravel().astype(float), f[4].ravel().astype(float))[0, 1] > 0.5


def test_flip_mirrors_frame_and_mask():
    frames, masks = _clip(2)
    f, m = augment_clip(frames, masks, np.random.default_rng(0), _geometry_only(p_flip=1.0))
    assert np.array_equal(m, masks[:, :, ::-1]) and np.array_equal(f, frames[:, :, ::-1])


def test_sector_removes_needle_outside_field_of_view():
    frames, masks = _clip(3)
    f, m = augment_clip(frames, masks, np.random.default_rng(0), _geometry_only(p_sector=1.0))
    black = f == 0
    assert black[:, 0, 0].all() and black[:, 0, -1].all()  # fan corners are black
    assert not (m & black).any()
    assert m.sum() <= masks.sum()


def test_overlay_and_intensity_change_pixels_not_masks():
    frames, masks = _clip(4)
    cfg = AugmentConfig.off()
    cfg.p_overlay = cfg.p_gain = cfg.p_gamma = cfg.p_speckle = cfg.p_blur = cfg.p_resolution = cfg.p_jpeg = 1.0
    f, m = augment_clip(frames, masks, np.random.default_rng(5), cfg)
    assert np.array_equal(m, masks)
    assert not np.array_equal(f, frames)


def test_deterministic_given_rng_and_off_is_identity():
    frames, masks = _clip(5)
    a = augment_clip(frames, masks, np.random.default_rng(9))
    b = augment_clip(frames, masks, np.random.default_rng(9))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    f, m = augment_clip(frames, masks, np.random.default_rng(9), AugmentConfig.off())
    assert np.array_equal(f, frames) and np.array_equal(m, masks)


def test_config_from_dict():
    assert AugmentConfig.from_dict({"enabled": False}).p_flip == 0
    assert AugmentConfig.from_dict({"gain": [0.5, 2.0]}).gain == (0.5, 2.0)
    with pytest.raises(ValueError, match="p_wobble"):
        AugmentConfig.from_dict({"p_wobble": 1})
    with pytest.raises(ValueError):
        augment_clip(np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 9), bool), np.random.default_rng(0))
