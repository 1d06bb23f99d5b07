"""Simulator v2 physics (issue 17): the needle line as thick as the axial resolution, the tip against the
shaft by incidence, decaying reverberations, and speckle fixed to the tissue."""
from __future__ import annotations

import numpy as np
import pytest

from needletrack.sim import preset, simulate_sequence
from needletrack.sim.needle import shaft_cnr, shallow_weight, tip_cnr


def _sim(angle, seed, n=2, **kw):
    # the needle's physics does not depend on the scene: pinned to the breast anatomy, as these checks were set
    # up (the clinical mix would move each seed's target and so the sampled geometry; widths for the muscle and
    # nerve scenes were checked over 12 seeds each: the same spread, medians 1.72 and 1.65 axial resolutions)
    kw.setdefault("scene", "breast")
    cfg = preset("clinical").replace(angle_deg=(angle, angle), border_prob=0.0, overlay_prob=0.0, convex_prob=0.0,
                                     first_visible_prob=1.0, bend_prob=0.0, tilt_deg=(0.0, 0.0), dropout=(0.0, 0.0),
                                     out_of_plane_prob=0.0, withdraw_prob=0.0, probe_move_prob=0.0, **kw)
    it = simulate_sequence(n, size=448, preset=cfg, seed=seed, needle="still")
    frames = list(it)
    return it, frames


def _power_columns(it):
    """The needle's echo power ROI and its top-left corner."""
    (ya, yb, xa, xb), pw = it.last_needle[0]
    return pw, xa, ya


def _fwhm(v):
    v = np.asarray(v, float)
    k = int(np.argmax(v))
    half = v[k] / 2
    lo = k
    while lo > 0 and v[lo - 1] > half:
        lo -= 1
    hi = k
    while hi < len(v) - 1 and v[hi + 1] > half:
        hi += 1
    # linear interpolation at both crossings
    left = lo - (v[lo] - half) / max(v[lo] - v[lo - 1], 1e-12) if lo > 0 else lo
    right = hi + (v[hi] - half) / max(v[hi] - v[hi + 1], 1e-12) if hi < len(v) - 1 else hi
    return right - left


def _shaft_columns(it, nd, frac=(0.2, 0.7)):
    """Display columns along the middle of the visible shaft (away from the tip and the image edge)."""
    tail, tip = np.array(nd["tail"]), np.array(nd["tip"])
    return [tail + f * (tip - tail) for f in np.linspace(frac[0], frac[1], 12)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_front_wall_as_thick_as_the_axial_resolution(seed):
    it, frames = _sim(8.0, seed)
    nd = frames[-1][2]
    assert nd["visible"]
    pw, xa, ya = _power_columns(it)
    ax_res = it.psf.axial_res_px
    widths = []
    for p in _shaft_columns(it, nd):
        col = int(round(p[0])) - xa
        if not 0 <= col < pw.shape[1]:
            continue
        v = pw[:, col]
        # the front wall: the first (shallowest) strong peak along the beam
        top = np.nonzero(v > 0.3 * v.max())[0]
        if top.size == 0:
            continue
        seg = v[max(top[0] - 8, 0): top[0] + int(2 * ax_res) + 4]
        widths.append(_fwhm(seg))
    assert len(widths) >= 6
    assert np.median(widths) <= 2.0 * ax_res, (np.median(widths), ax_res)


def test_reverberations_decay_below_the_shaft():
    it, frames = _sim(6.0, 5, reverb_count=(3, 3), reverb_decay=(0.3, 0.3))
    nd = frames[-1][2]
    pw, xa, ya = _power_columns(it)
    spacing = it.id_px / np.cos(np.radians(nd["angle_deg"]))
    ratios = []
    for p in _shaft_columns(it, nd):
        col = int(round(p[0])) - xa
        if not 0 <= col < pw.shape[1]:
            continue
        v = pw[:, col]
        k0 = int(np.argmax(v > 0.3 * v.max()))
        k0 = k0 + int(np.argmax(v[k0:k0 + 4]))
        peaks = []
        for k in range(4):
            c = int(round(k0 + k * spacing))
            w = v[max(c - 2, 0): c + 3]
            peaks.append(w.max() if w.size else 0.0)
        ratios.append(peaks)
    r = np.median(np.array(ratios), axis=0)
    # the front wall, then back wall and reverberations, each fainter than the one before
    assert r[0] > r[1] > r[2] > r[3], r
    assert r[1] < 0.5 * r[0]


def _along_axis(it, nd, pw, xa, ya, ts):
    tail, tip = np.array(nd["tail"]), np.array(nd["tip"])
    d = (tip - tail) / np.linalg.norm(tip - tail)
    out = []
    for t in ts:
        p = tip + t * d
        c = int(round(p[0])) - xa
        r0 = int(round(p[1])) - ya
        win = pw[max(r0 - 12, 0): r0 + 12, max(c - 1, 0): c + 2]
        out.append(win.max() if win.size else 0.0)
    return np.array(out)


def _tip_over_shaft(angle, seeds):
    """Per sequence: (measured tip/shaft echo power, the ratio the calibrated CNR data predicts)."""
    out = []
    for seed in seeds:
        it, frames = _sim(angle, seed)
        nd = frames[-1][2]
        if not nd["visible"]:
            continue
        pw, xa, ya = _power_columns(it)
        sp = it.probe.sp
        L = float(np.hypot(*(np.array(nd["tip"]) - np.array(nd["tail"]))))
        if L * sp < 3.0:
            continue
        tip = _along_axis(it, nd, pw, xa, ya, -np.arange(0, 0.5 / sp)).mean()                       # last 0.5 mm
        behind = np.arange(max(3.0 / sp, 0.4 * L), 0.9 * L)
        if behind.size == 0:     # too short a shaft to compare against
            continue
        shaft = _along_axis(it, nd, pw, xa, ya, -behind).mean()  # behind it
        inc = nd["incidence_deg"]
        pred = 10 ** ((tip_cnr(inc) - shaft_cnr(inc)) * 5.57 * it.contrast_scale / 10)
        out.append((tip / max(shaft, 1e-9), float(pred)))
    return np.array(out)


def test_tip_not_brighter_than_shaft_at_shallow_angles():
    # the needle's texture makes single needles vary; the claim holds for the typical needle
    r = _tip_over_shaft(7.0, range(1, 9))
    assert len(r) >= 6
    assert np.median(r[:, 0]) <= 1.0, r[:, 0]


def test_tip_follows_the_data_at_steep_angles():
    # the needle_visibility data: at steep incidence the shaft fades and the bevel tip still echoes
    assert shallow_weight(45.0) == 0.0 and shallow_weight(8.0) == 1.0
    assert tip_cnr(45.0) > shaft_cnr(45.0)
    r = _tip_over_shaft(45.0, range(1, 7))
    assert len(r) >= 4
    assert np.median(r[:, 0]) > 1.0
    # within a factor 4 of the ratio the calibrated CNR curves predict
    assert 0.25 <= np.median(r[:, 0] / r[:, 1]) <= 4.0, r


def _still_correlation(preset_name, seed, step=1):
    cfg = preset(preset_name).replace(probe_drift_mm=(0.0, 0.0), probe_rot_deg=(0.0, 0.0), probe_move_prob=0.0)
    it = simulate_sequence(4, size=448, preset=cfg, seed=seed, needle="absent", frame_step=step)
    frames = [f.astype(np.float64) for f, _, _ in it]
    sel = it.probe.content
    return min(np.corrcoef(a[sel], b[sel])[0, 1] for a, b in zip(frames, frames[1:]))


@pytest.mark.parametrize("name", ["easy", "clinical", "hard", "bench"])
def test_speckle_fixed_to_tissue_with_a_still_probe(name):
    for seed in (0, 1):
        assert _still_correlation(name, seed) >= 0.95


def test_speckle_decorrelates_when_the_probe_moves():
    from needletrack.sim.motion import speckle_decorrelation

    still = speckle_decorrelation(np.zeros((50, 2)), np.zeros(50), 0.3)
    assert np.all(still == 0)
    moving = speckle_decorrelation(np.cumsum(np.full((50, 2), 0.1), axis=0), np.zeros(50), 0.3)
    assert moving[-1] > 0.5


def _profile_across(it, nd, pw, xa, ya, t_from_tip, us):
    """Echo power at offsets ``us`` (px along the shaft's normal, away from the probe) across the axis, ``t_from_tip``
    px back from the tip (nearest pixel)."""
    tail, tip = np.array(nd["tail"], float), np.array(nd["tip"], float)
    d = (tip - tail) / np.linalg.norm(tip - tail)
    n = np.array([-d[1], d[0]]) if d[0] >= 0 else np.array([d[1], -d[0]])    # y down: away from a top probe
    p = tip - t_from_tip * d
    out = []
    for u in us:
        q = p + u * n
        c, r0 = int(round(q[0])) - xa, int(round(q[1])) - ya
        out.append(float(pw[r0, c]) if 0 <= r0 < pw.shape[0] and 0 <= c < pw.shape[1] else 0.0)
    return np.array(out)


def test_bevel_ends_the_back_wall_before_the_tip():
    """At a shallow angle the tube is cut by the bevel: half a bevel before the tip the front wall still echoes
    but the back wall (one inner diameter deeper) is gone, while behind the bevel both walls show."""
    ratios_mid, ratios_bevel = [], []
    for seed in range(1, 13):
        it, frames = _sim(8.0, seed, gauge=(16, 16))
        nd = frames[-1][2]
        if not nd["visible"]:
            continue
        pw, xa, ya = _power_columns(it)
        L = float(np.hypot(*(np.array(nd["tip"]) - np.array(nd["tail"]))))
        if L < 1.5 * it.bevel_px:
            continue
        r = it.width_px / 2
        front = np.arange(-r - 2, -r + 3)              # around the front wall
        back = front + it.id_px                         # around the back wall
        for t, bucket in (((L + it.bevel_px) / 2, ratios_mid), (it.bevel_px / 2, ratios_bevel)):
            f = _profile_across(it, nd, pw, xa, ya, t, front).max()
            b = _profile_across(it, nd, pw, xa, ya, t, back).max()
            bucket.append(b / max(f, 1e-12))
    assert len(ratios_mid) >= 3
    assert np.median(ratios_mid) > 0.1                  # both walls along the shaft
    assert np.median(ratios_bevel) < 0.25 * np.median(ratios_mid)
