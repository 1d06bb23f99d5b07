"""Simulator motion (issue 17): probe-move episodes, the needle withdrawn while the probe moves, the bench
scene, and windows of the real liver sweep as moving backgrounds."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from needletrack.sim import preset, simulate_sequence

QUIET = dict(probe_drift_mm=(0.0, 0.0), probe_rot_deg=(0.0, 0.0), tremor_mm=(0.0, 0.0), tremor_deg=(0.0, 0.0),
             breathing_mm=(0.0, 0.0), compression_mm=(0.0, 0.0), pulse_mm=(0.0, 0.0), elev_decorrelation=(0.0, 0.0),
             border_prob=0.0, overlay_prob=0.0, convex_prob=0.0, persistence=(0.0, 0.0))


def _shift_px(a, b):
    """(dx, dy) of b against a by phase correlation."""
    win = cv2.createHanningWindow(a.shape[::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(a.astype(np.float32), b.astype(np.float32), win)
    return dx, dy


@pytest.mark.parametrize("mm", [3.0, 8.0])
def test_probe_move_shifts_the_image_by_the_configured_mm(mm):
    cfg = preset("clinical").replace(probe_move_prob=1.0, probe_move_mm=(mm, mm), probe_move_deg=(0.0, 0.0),
                                     probe_move_s=(1.0, 1.0), move_withdraw_prob=0.0, **QUIET)
    it = simulate_sequence(50, size=256, preset=cfg, seed=3, needle="absent", frame_step=3)
    t0, L, amp, _ = it.motion.moves[0]
    assert abs(abs(amp) - mm) < 1e-9 and len(it.motion.moves) == 1
    assert t0 + L < 147                       # the whole move is inside the sequence
    out = list(it)
    k0, k1 = max(int(t0) // 3 - 1, 0), len(out) - 1
    dx, dy = _shift_px(out[k0][0][40:-40, 60:-60], out[k1][0][40:-40, 60:-60])
    sp = it.probe.sp
    moved = it.motion.probe_xy[k1 * 3, 0] - it.motion.probe_xy[k0 * 3, 0]
    assert abs(moved - amp) < 1e-6
    # the probe slides by amp: the tissue moves the other way on screen (within 0.5 mm; axial share <= 15 %)
    assert abs(-dx * sp - amp) < 0.5, (dx * sp, amp)
    assert abs(dy * sp) <= 0.15 * mm + 0.3


def test_needle_withdrawn_during_a_probe_move_comes_back():
    cfg = preset("clinical").replace(probe_move_prob=1.0, probe_move_mm=(5.0, 5.0), move_withdraw_prob=1.0,
                                     probe_move_s=(1.0, 1.0), withdraw_prob=0.0, out_of_plane_prob=0.0,
                                     first_visible_prob=1.0)
    seen = 0
    for seed in range(12):
        it = simulate_sequence(50, size=96, preset=cfg, seed=seed, frame_step=3)
        out = list(it)
        vis = [n["visible"] for _, _, n in out]
        for (_, m, n) in out:
            if not n["visible"]:
                assert not m.any()
        if vis[0] and False in vis:
            k = vis.index(False)
            t0 = it.motion.moves[0][0]
            # the needle disappears around the move and comes back after it
            if True in vis[k:] and abs(k * 3 - t0) < 60:
                seen += 1
    assert seen >= 2


def test_compression_breathing_and_pulse_are_drawn_from_the_config():
    cfg = preset("hard")
    it = simulate_sequence(40, size=96, preset=cfg, seed=1, frame_step=1)
    mo = it.motion
    assert mo.compress.shape == mo.pulse.shape == (40,) and mo.tissue_xy.shape == (40, 2)
    assert mo.compress.max() - mo.compress.min() <= cfg.compression_mm[1] + 1e-9
    assert np.abs(mo.tissue_xy).max() <= 2.5 * cfg.breathing_mm[1]
    assert 0 <= mo.pulse.max() <= cfg.pulse_mm[1]
    off = simulate_sequence(40, size=96, preset=cfg.replace(compression_mm=(0.0, 0.0), breathing_mm=(0.0, 0.0),
                                                             pulse_mm=(0.0, 0.0)), seed=1, frame_step=1).motion
    assert not off.compress.any() and not off.tissue_xy.any() and not off.pulse.any()
    # breathing moves the picture
    a = [f.astype(float) for f, _, _ in simulate_sequence(2, size=128, preset=cfg.replace(
        **{**QUIET, "breathing_mm": (3.0, 3.0)}), seed=2, needle="absent", frame_step=25)]
    assert np.abs(a[0] - a[1]).mean() > 1.0


def test_presets_keep_their_character():
    e, c, h = preset("easy"), preset("clinical"), preset("hard")
    assert e.probe_move_prob < c.probe_move_prob < h.probe_move_prob
    assert e.probe_move_mm[1] <= c.probe_move_mm[1] <= h.probe_move_mm[1] == 10.0
    assert h.probe_move_mm[0] >= 2.0 and e.probe_move_mm[0] >= 2.0
    assert e.breathing_mm[1] < h.breathing_mm[1]


def test_bench_preset_has_anechoic_water_over_a_block():
    cfg = preset("bench").replace(border_prob=0.0, overlay_prob=0.0)
    for seed in range(3):
        it = simulate_sequence(1, size=192, preset=cfg, seed=seed, needle="absent")
        f = next(iter(it))[0].astype(float)
        x0, y0, x1, y1 = it.probe.box
        depth = y1 - y0
        top = f[y0 + 3: y0 + int(0.25 * depth), x0:x1]       # water (the block starts at 30-60 % of the depth)
        block = f[y0 + int(0.7 * depth): y0 + int(0.85 * depth), x0:x1]
        assert np.median(top) < 0.3 * np.median(block), (np.median(top), np.median(block))
    assert "bench" in it.source


@pytest.fixture(scope="module")
def liver():
    from needletrack.data.splits import liver_frames

    blocks = liver_frames("train")
    if not blocks:
        pytest.skip("liver sweep not available")
    return blocks


def test_liver_windows_come_from_the_real_sweep_and_masks_follow_the_needle(liver):
    frames = liver[0]
    cfg = preset("clinical").replace(border_prob=0.0, overlay_prob=0.0, first_visible_prob=1.0, **{
        k: v for k, v in QUIET.items() if k not in ("border_prob", "overlay_prob", "convex_prob")})
    it = simulate_sequence(30, size=192, preset=cfg, seed=5, needle="absent", frame_step=2, moving_background=liver)
    out = list(it)
    oy, ox, ch, cw, mirror = it._mv_crop
    def corr(i, f):
        src = frames[i][oy:oy + ch, ox:ox + cw]
        src = src[:, ::-1] if mirror else src
        src = cv2.resize(src, (192, 192), interpolation=cv2.INTER_AREA).astype(float)
        return np.corrcoef(src.ravel(), f.ravel())[0, 1]

    for k in (0, 15, 29):
        i = int(round(it.sweep_idx[k * 2]))
        f = out[k][0].astype(float)
        c = corr(i, f)
        # the frame is the real sweep frame (the canvas margin makes it a slightly wider view of the same crop)
        assert c > 0.6 and c > corr((i + 40) % len(frames), f) + 0.1
    # with a needle: it shows where the sweep's plane holds it and the mask is empty where it does not
    it = simulate_sequence(40, size=128, preset=cfg, seed=1, frame_step=3, moving_background=liver)
    out = list(it)
    assert out[0][2]["visible"] and out[0][1].any()
    for _, m, n in out:
        assert m.any() == n["visible"]
    # the needle's distance from the plane: the sweep's travel plus the needle's own out-of-plane wander (which can
    # bring it back into a plane the sweep has carried away)
    dist = [abs(it.sweep_elev[j * 3] + it.motion.elevation[j * 3]) for j in range(len(out))]
    far = [n["visible"] for (_, _, n), dz in zip(out, dist) if dz > 3 * it.slab + abs(it.tilt) * 128 * it.probe.sp]
    assert not any(far)
    assert sum(dz > 3 * it.slab for dz in dist) >= 5      # the sweep does carry the plane away in this sequence
