"""The realism yardstick: can a simple classifier tell simulated ultrasound patches from real ones?

Pinned by the measurement-harness issue so that it cannot be tuned to pass; change nothing here to move
a figure. Every image is first brought to the 256-px scale (longest side 256, area interpolation).
Patches of 32×32 are drawn only where the whole patch lies inside the imaging sector or window, found by
the same rule for real and simulated frames (:func:`imaging_region`); for the needle-free score, patches
that touch the needle are left out. Each patch gives 47 features (:func:`patch_features`):

- a 16-bin grey histogram (share of pixels per bin of 16 grey levels);
- mean, std, skew, kurtosis, percentiles 5/25/50/75/95, the share of saturated (>= 250) and of
  black (<= 5) pixels;
- Sobel gradient magnitude mean and std, the ratio of x-energy to y-energy, mean |Laplacian| / std;
- normalised autocorrelation at lags 1, 2, 3, 4, 6 in x and in y;
- a 6-bin gradient-orientation histogram (magnitude-weighted, orientation mod 180°).

Classifiers: a random forest (200 trees, min_samples_leaf 3) and a logistic regression (standardised
features), scored by balanced accuracy of out-of-fold predictions under 5-fold cross-validation grouped by
source image or sequence (no group is in a training and a test fold at once). 0.5 means the two kinds of
patch cannot be told apart.
"""
from __future__ import annotations

import cv2
import numpy as np

SCALE = 256
PATCH = 32
AC_LAGS = (1, 2, 3, 4, 6)
N_FEATURES = 16 + 11 + 4 + 2 * len(AC_LAGS) + 6
FEATURE_NAMES = (
    [f"hist{i}" for i in range(16)]
    + ["mean", "std", "skew", "kurtosis", "p5", "p25", "p50", "p75", "p95", "saturated", "black"]
    + ["grad_mean", "grad_std", "xy_energy_ratio", "lap_over_std"]
    + [f"ac_x{k}" for k in AC_LAGS] + [f"ac_y{k}" for k in AC_LAGS]
    + [f"orient{i}" for i in range(6)]
)
assert len(FEATURE_NAMES) == N_FEATURES


def to_scale(img: np.ndarray, scale: int = SCALE) -> tuple[np.ndarray, float]:
    """Resize so the longest side is ``scale`` px; returns (image, factor)."""
    img = np.asarray(img)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    h, w = img.shape
    f = scale / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, size, interpolation=interp), f


def imaging_region(img_u8: np.ndarray, margin: int = 4) -> np.ndarray:
    """The imaging sector or window of a B-mode frame (bool): the convex hull of the largest bright
    connected region (5×5-blurred grey > 8), shrunk by ``margin`` px. Borders and burned-in text outside
    the sector fall away; the same rule serves real and simulated frames."""
    blur = cv2.blur(img_u8, (5, 5))
    fg = (blur > 8).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    out = np.zeros(img_u8.shape, np.uint8)
    if n <= 1:
        return out.astype(bool)
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    pts = cv2.findNonZero((lab == k).astype(np.uint8))
    hull = cv2.convexHull(pts)
    cv2.fillConvexPoly(out, hull, 1)
    if margin > 0:
        out = cv2.erode(out, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
    return out.astype(bool)


def sample_patches(img_u8: np.ndarray, rng: np.random.Generator, n: int, exclude: np.ndarray | None = None,
                   patch: int = PATCH) -> np.ndarray:
    """Up to ``n`` patches (n×patch×patch float32) lying wholly inside the imaging region and, where
    ``exclude`` (bool, same size) is given, touching none of its pixels."""
    region = imaging_region(img_u8)
    if exclude is not None:
        region &= ~exclude
    # a patch at top-left (y, x) fits when every pixel of it is allowed: erode with the patch footprint
    ok = cv2.erode(region.astype(np.uint8), np.ones((patch, patch), np.uint8), anchor=(0, 0),
                   borderType=cv2.BORDER_CONSTANT, borderValue=0)
    ys, xs = np.nonzero(ok[: img_u8.shape[0] - patch + 1, : img_u8.shape[1] - patch + 1])
    if ys.size == 0:
        return np.zeros((0, patch, patch), np.float32)
    pick = rng.choice(ys.size, size=min(n, ys.size), replace=False)
    return np.stack([img_u8[y:y + patch, x:x + patch] for y, x in zip(ys[pick], xs[pick])]).astype(np.float32)


def _autocorr(z: np.ndarray, lag: int, axis: int) -> np.ndarray:
    if axis == 2:
        a, b = z[:, :, :-lag], z[:, :, lag:]
    else:
        a, b = z[:, :-lag, :], z[:, lag:, :]
    return (a * b).mean(axis=(1, 2))


def patch_features(p: np.ndarray) -> np.ndarray:
    """The 47 pinned features of each patch of ``p`` (N×32×32, grey levels 0..255) -> N×47 float64."""
    p = np.asarray(p, dtype=np.float64)
    n = p.shape[0]
    flat = p.reshape(n, -1)
    hist = np.stack([np.histogram(r, bins=16, range=(0, 256))[0] for r in flat]) / flat.shape[1]
    mean = flat.mean(1)
    std = flat.std(1)
    sd = np.maximum(std, 1e-6)
    z = (flat - mean[:, None]) / sd[:, None]
    skew = (z ** 3).mean(1)
    kurt = (z ** 4).mean(1) - 3.0
    pct = np.percentile(flat, [5, 25, 50, 75, 95], axis=1).T
    sat = (flat >= 250).mean(1)
    black = (flat <= 5).mean(1)
    # Sobel on the interior (no padding)
    c = p
    gx = (c[:, :-2, 2:] + 2 * c[:, 1:-1, 2:] + c[:, 2:, 2:]) - (c[:, :-2, :-2] + 2 * c[:, 1:-1, :-2] + c[:, 2:, :-2])
    gy = (c[:, 2:, :-2] + 2 * c[:, 2:, 1:-1] + c[:, 2:, 2:]) - (c[:, :-2, :-2] + 2 * c[:, :-2, 1:-1] + c[:, :-2, 2:])
    mag = np.hypot(gx, gy).reshape(n, -1)
    ex = (gx ** 2).reshape(n, -1).sum(1)
    ey = (gy ** 2).reshape(n, -1).sum(1)
    ratio = ex / np.maximum(ey, 1e-9)
    lap = c[:, :-2, 1:-1] + c[:, 2:, 1:-1] + c[:, 1:-1, :-2] + c[:, 1:-1, 2:] - 4 * c[:, 1:-1, 1:-1]
    lap_std = np.abs(lap).reshape(n, -1).mean(1) / sd
    zz = z.reshape(p.shape)
    ac_x = np.stack([_autocorr(zz, k, 2) for k in AC_LAGS], 1)
    ac_y = np.stack([_autocorr(zz, k, 1) for k in AC_LAGS], 1)
    ang = (np.degrees(np.arctan2(gy, gx)) % 180.0).reshape(n, -1)
    bins = np.minimum((ang / 30.0).astype(int), 5)
    orient = np.stack([np.bincount(b, weights=w, minlength=6) for b, w in zip(bins, mag)])
    orient = orient / np.maximum(orient.sum(1, keepdims=True), 1e-9)
    feats = np.column_stack([hist, mean, std, skew, kurt, pct, sat, black,
                             mag.mean(1), mag.std(1), ratio, lap_std, ac_x, ac_y, orient])
    assert feats.shape[1] == N_FEATURES
    return feats


def image_patches(img, rng, n, exclude=None) -> np.ndarray:
    """Bring ``img`` (and the ``exclude`` mask) to the 256-px scale, then :func:`sample_patches`."""
    small, f = to_scale(img)
    ex = None
    if exclude is not None and np.any(exclude):
        ex = cv2.resize(np.asarray(exclude, np.uint8), (small.shape[1], small.shape[0]),
                        interpolation=cv2.INTER_NEAREST)
        ex = cv2.dilate(ex, np.ones((5, 5), np.uint8)).astype(bool)
    return sample_patches(small, rng, n, exclude=ex)


def classify(X_a: np.ndarray, groups_a, X_b: np.ndarray, groups_b, seed: int = 0, folds: int = 5) -> dict:
    """Balanced accuracy of telling set a (label 0) from set b (label 1), grouped cross-validation, for
    the random forest and the logistic regression. Group names must not be shared between a and b."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.concatenate([X_a, X_b])
    y = np.concatenate([np.zeros(len(X_a), int), np.ones(len(X_b), int)])
    ga = [f"a:{g}" for g in groups_a]
    gb = [f"b:{g}" for g in groups_b]
    groups = np.array(ga + gb)
    n_groups = min(len(set(ga)), len(set(gb)))
    k = max(2, min(folds, n_groups))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    models = {
        "random_forest": RandomForestClassifier(n_estimators=200, min_samples_leaf=3, random_state=seed,
                                                n_jobs=1, class_weight="balanced"),
        "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000,
                                                                                   class_weight="balanced")),
    }
    out = {"n_a": int(len(X_a)), "n_b": int(len(X_b)), "groups_a": len(set(ga)), "groups_b": len(set(gb)),
           "folds": k}
    for name, model in models.items():
        pred = cross_val_predict(model, X, y, groups=groups, cv=cv)
        out[name] = float(balanced_accuracy_score(y, pred))
    return out


def feature_report(X_sim: np.ndarray, X_real: np.ndarray, top: int = 8) -> list[dict]:
    """Which single features tell the two sets apart, most first: for each pinned feature, the area under the
    ROC curve of the feature alone (real as the positive class; 0.5 = no signal, below 0.5 = lower on real
    patches) and the median of each set. A diagnostic for simulator work; the score is :func:`classify`'s."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(X_sim)), np.ones(len(X_real))]
    X = np.concatenate([X_sim, X_real])
    rows = []
    for j, name in enumerate(FEATURE_NAMES):
        auc = float(roc_auc_score(y, X[:, j])) if np.ptp(X[:, j]) > 0 else 0.5
        rows.append({"feature": name, "auc_real_higher": round(auc, 3),
                     "median_sim": round(float(np.median(X_sim[:, j])), 4),
                     "median_real": round(float(np.median(X_real[:, j])), 4)})
    rows.sort(key=lambda r: -abs(r["auc_real_higher"] - 0.5))
    return rows[:top]
