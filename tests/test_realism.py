"""The pinned realism classifier: features, sector sampling and the classifiers behave as stated."""
from __future__ import annotations

import cv2
import numpy as np

from needletrack.eval import realism as R


def _speckle(rng, n, smooth=0.0):
    p = rng.exponential(60.0, size=(n, 32, 32)).astype(np.float32)
    if smooth:
        p = np.stack([cv2.GaussianBlur(x, (0, 0), smooth) for x in p])
    return np.clip(p, 0, 255)


def test_feature_vector_is_the_pinned_47():
    rng = np.random.default_rng(0)
    f = R.patch_features(_speckle(rng, 3))
    assert f.shape == (3, 47) == (3, R.N_FEATURES) and np.isfinite(f).all()
    names = R.FEATURE_NAMES
    const = R.patch_features(np.full((1, 32, 32), 100.0))[0]
    assert const[names.index("std")] == 0 and const[names.index("hist6")] == 1.0 and const[:16].sum() == 1.0
    assert const[names.index("mean")] == 100 and const[names.index("p95")] == 100


def test_features_see_orientation_grain_and_saturation():
    names = R.FEATURE_NAMES
    x = np.tile((np.arange(32) % 4 < 2) * 200.0, (32, 1))[None]           # vertical stripes: x-gradients only
    f = R.patch_features(x)[0]
    assert f[names.index("xy_energy_ratio")] > 100
    rng = np.random.default_rng(1)
    white = R.patch_features(_speckle(rng, 20))
    smooth = R.patch_features(_speckle(rng, 20, smooth=3.0))
    i = names.index("ac_x1")
    assert abs(white[:, i].mean()) < 0.15 and smooth[:, i].mean() > 0.8
    sat = R.patch_features(np.full((1, 32, 32), 255.0))[0]
    assert sat[names.index("saturated")] == 1.0


def test_patches_come_only_from_inside_the_sector_and_avoid_the_needle():
    img = np.zeros((256, 256), np.uint8)
    cv2.ellipse(img, (128, 0), (200, 230), 0, 40, 140, 120, -1)          # a fan
    cv2.putText(img, "LEFT", (2, 250), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 2)  # burned-in text, outside
    region = R.imaging_region(img)
    assert region[120, 128] and not region[245, 10] and not region[5, 5]
    rng = np.random.default_rng(0)
    needle = np.zeros_like(img, bool)
    needle[100:104, :] = True
    p = R.sample_patches(img, rng, 200, exclude=needle)
    assert len(p) > 20 and (p == 120).all()                              # only tissue grey, no border, no text
    with_needle_img = img.copy()
    with_needle_img[needle] = 255
    q = R.sample_patches(with_needle_img, rng, 200, exclude=needle)
    assert (q != 255).all()


def test_classifier_separates_what_differs_and_not_what_does_not():
    rng = np.random.default_rng(2)
    a = R.patch_features(_speckle(rng, 80))
    b = R.patch_features(_speckle(rng, 80, smooth=2.0))
    c = R.patch_features(_speckle(rng, 80))
    ga = [f"a{i // 6}" for i in range(80)]
    gb = [f"b{i // 6}" for i in range(80)]
    diff = R.classify(a, ga, b, gb)
    same = R.classify(a, ga, c, gb)
    assert diff["random_forest"] > 0.95 and diff["logistic_regression"] > 0.95
    assert 0.3 < same["random_forest"] < 0.7


def test_feature_report_names_the_feature_that_differs():
    rng = np.random.default_rng(3)
    a = R.patch_features(_speckle(rng, 60))
    b = R.patch_features(np.clip(_speckle(rng, 60) * 0.5, 0, 255))     # darker: the same grain, half the grey
    rep = R.feature_report(a, b, top=5)
    assert len(rep) == 5 and {"feature", "auc_real_higher", "median_sim", "median_real"} <= set(rep[0])
    assert abs(rep[0]["auc_real_higher"] - 0.5) > 0.45
    assert abs(rep[0]["auc_real_higher"] - 0.5) >= abs(rep[-1]["auc_real_higher"] - 0.5)
    every = {r["feature"]: r for r in R.feature_report(a, b, top=R.N_FEATURES)}
    assert len(every) == R.N_FEATURES
    assert every["mean"]["auc_real_higher"] < 0.05                  # lower on the "real" side, and said so
    assert every["mean"]["median_real"] < every["mean"]["median_sim"]
    assert abs(every["ac_x1"]["auc_real_higher"] - 0.5) < 0.2       # the grain did not change
