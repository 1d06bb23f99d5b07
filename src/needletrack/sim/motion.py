"""Motion at the acquisition rate: insertion plan, hand tremor, probe drift, elevation, tissue drag.

Everything is an array over source frames (25 fps by default), drawn from a numpy Generator.
Distances are millimetres along the planned needle path, measured from where the path enters the
image (s = 0); negative s means the tip has not reached the image yet.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _u(rng: np.random.Generator, r) -> float:
    lo, hi = float(r[0]), float(r[1])
    return lo if hi <= lo else float(rng.uniform(lo, hi))


def smooth_noise(rng: np.random.Generator, n: int, fps: float, knot_s: float, amp: float) -> np.ndarray:
    """A smooth random curve in [-amp, amp]: cosine interpolation between random knots every ``knot_s`` s."""
    if n <= 0:
        return np.zeros(0)
    step = max(knot_s * fps, 1.0)
    nk = int(np.ceil(n / step)) + 2
    knots = rng.uniform(-1.0, 1.0, nk) * amp
    t = np.arange(n) / step + rng.uniform(0, 1)
    i = np.floor(t).astype(int)
    f = t - i
    w = (1 - np.cos(np.pi * f)) / 2
    return knots[i] * (1 - w) + knots[np.minimum(i + 1, nk - 1)] * w


def _ease(f: np.ndarray) -> np.ndarray:
    return f * f * (3 - 2 * f)


@dataclass
class Motion:
    s_tip: np.ndarray        # mm along the path, per source frame
    tremor_xy: np.ndarray    # (T, 2) mm, hand tremor of the whole needle
    tremor_deg: np.ndarray   # (T,) degrees, angular tremor about the skin entry
    probe_xy: np.ndarray     # (T, 2) mm, probe translation (lateral, axial)
    probe_deg: np.ndarray    # (T,) degrees, probe in-plane rotation
    elevation: np.ndarray    # (T,) mm, needle axis offset from the imaging plane
    drag: np.ndarray         # (T,) mm, tissue displacement along the shaft near it
    decor: np.ndarray        # (T,) 0..1: weight of the second speckle realization (out-of-plane decorrelation)
    tissue_xy: np.ndarray = None   # (T, 2) mm, breathing: the tissue (and the needle in it) shifts under the probe
    compress: np.ndarray = None    # (T,) mm, probe pressure: axial squeeze, mm at the bottom of the image
    pulse: np.ndarray = None       # (T,) mm, local expansion around an artery (pulse)
    moves: list = None             # probe-move episodes: (first source frame, frames, lateral mm, degrees)


def probe_moves(rng: np.random.Generator, cfg, n: int, fps: float):
    """Probe-move episodes: the probe slides ``probe_move_mm`` (and rocks ``probe_move_deg``) over
    ``probe_move_s`` seconds, then holds its new place. Returns (xy (T, 2) mm, degrees (T,), episodes)."""
    xy = np.zeros((n, 2))
    deg = np.zeros(n)
    episodes = []
    if n < 3 or rng.random() >= cfg.probe_move_prob:
        return xy, deg, episodes
    count = 1 + int(rng.poisson(n / fps / 10.0))
    k = np.arange(n)
    cum = 0.0
    for t0 in np.sort(rng.uniform(0.05, 0.85, count) * n):
        L = max(_u(rng, cfg.probe_move_s) * fps, 1.0)
        amp = _u(rng, cfg.probe_move_mm) * rng.choice([-1.0, 1.0])
        if abs(cum + amp) > 12.0:          # slide back rather than off the patient
            amp = -amp
        cum += amp
        rot = _u(rng, cfg.probe_move_deg) * rng.choice([-1.0, 1.0])
        f = _ease(np.clip((k - t0) / L, 0, 1))
        xy[:, 0] += amp * f
        xy[:, 1] += amp * rng.uniform(-0.15, 0.15) * f
        deg += rot * f
        episodes.append((float(t0), float(L), float(amp), float(rot)))
    return xy, deg, episodes


def _during_moves(rng, cfg, episodes, s_tip, elevation, fps, slab_mm):
    """The needle is withdrawn (tip out of the image) or leaves the plane while the probe moves, and comes
    back after (in place on ``s_tip`` and ``elevation``)."""
    n = len(s_tip)
    k = np.arange(n)
    for t0, L, _, _ in episodes:
        if rng.random() >= cfg.move_withdraw_prob:
            continue
        ta = max(t0 - rng.uniform(0.0, 0.5) * fps, 0.5)   # starts just before the move (never at frame 0)
        tb = t0 + L + rng.uniform(0.2, 1.5) * fps          # held until after it
        if rng.random() < 0.6:                             # withdrawn, then re-inserted along its path
            w_out = rng.uniform(0.2, 0.6) * fps
            w_in = rng.uniform(0.5, 2.0) * fps
            w = np.minimum(_ease(np.clip((k - ta) / w_out, 0, 1)), 1 - _ease(np.clip((k - tb) / w_in, 0, 1)))
            back = -rng.uniform(3.0, 12.0)
            s_tip[:] = s_tip * (1 - w) + back * w
        else:                                              # the plane slips off the needle, then finds it again
            ramp = rng.uniform(0.2, 0.8) * fps
            w = np.minimum(_ease(np.clip((k - ta) / ramp, 0, 1)), 1 - _ease(np.clip((k - tb) / ramp, 0, 1)))
            elevation += rng.choice([-1.0, 1.0]) * slab_mm * rng.uniform(2.5, 5.0) * w


def tissue_motion(rng: np.random.Generator, cfg, n: int, fps: float):
    """Breathing (slow periodic shift, mostly axial), probe pressure (axial squeeze, slow changes plus a push
    with each probe move is left to the caller) and pulse (a sharp periodic expansion)."""
    t = np.arange(n) / fps
    br = _u(rng, cfg.breathing_mm)
    per = _u(rng, cfg.breathing_period_s)
    ph = rng.uniform(0, 2 * np.pi)
    cyc = np.sin(2 * np.pi * t / per + ph) + 0.25 * np.sin(4 * np.pi * t / per + 2 * ph)
    lat = rng.uniform(-0.4, 0.4)
    tissue_xy = np.stack([br * lat * cyc, br * cyc], axis=1)
    tissue_xy -= tissue_xy[:1]
    cmax = _u(rng, cfg.compression_mm)
    comp = cmax * (0.5 + 0.5 * smooth_noise(rng, n, fps, rng.uniform(1.0, 3.0), 1.0))
    comp -= comp[:1] if n else 0.0
    pa = _u(rng, cfg.pulse_mm)
    hz = _u(rng, cfg.pulse_hz)
    pulse = pa * ((1 + np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))) / 2) ** 4
    return tissue_xy, comp, pulse


def plan_insertion(rng: np.random.Generator, cfg, n: int, fps: float, s_target: float,
                   s_start: float) -> np.ndarray:
    """Tip position over ``n`` source frames: advance, pause, small retractions, re-advances, a stop
    at the target with to-and-fro sampling moves, optionally a biopsy-gun throw, and possibly a full
    withdrawal (tip out of the image) followed by re-insertion."""
    keys_t = [0.0]
    keys_s = [s_start]
    t, s = 0.0, s_start
    dur = n / fps + 1.0
    withdraw_at = rng.uniform(0.1, 0.6) * (n / fps) if rng.random() < cfg.withdraw_prob else None
    if withdraw_at is not None:
        w_back = rng.uniform(3.0, 12.0)
        w_out = rng.uniform(0.2, 0.6)              # seconds to pull out (fast)
        w_hold = rng.uniform(0.5, 3.0)             # seconds with the tip out of the image
        w_in = rng.uniform(0.5, 2.0)               # seconds to come back to where it was
        dur += w_out + w_hold + w_in
    at_target = False
    while t < dur:
        if not at_target and s < s_target - 0.5:
            v = _u(rng, cfg.speed_mm_s)
            step = min(rng.uniform(2.0, 12.0), s_target - s + rng.uniform(-0.5, 2.0))
            step = max(step, 0.5)
            t += step / v
            s += step
            keys_t.append(t)
            keys_s.append(s)
            if rng.random() < 0.6:                 # pause
                t += _u(rng, cfg.pause_s)
                keys_t.append(t)
                keys_s.append(s)
            if rng.random() < cfg.retract_prob:    # small retraction, then re-advance
                back = min(_u(rng, cfg.retract_mm), max(s, 0.5))
                t += back / (v * rng.uniform(0.8, 2.0))
                s -= back
                keys_t.append(t)
                keys_s.append(s)
            if s >= s_target - 0.5:
                at_target = True
        else:
            at_target = True
            r = rng.random()
            if r < 0.15:                           # biopsy gun throw: 10-22 mm in ~2 frames
                throw = rng.uniform(10.0, 22.0)
                t += 0.06
                keys_t.append(t)
                keys_s.append(s + throw)
                t += rng.uniform(0.3, 1.5)
                keys_t.append(t)
                keys_s.append(s + throw)
                t += throw / rng.uniform(4.0, 12.0)
                keys_t.append(t)
                keys_s.append(s)
            elif r < 0.6:                          # to-and-fro sampling movement
                amp = rng.uniform(1.0, 6.0)
                v = _u(rng, cfg.speed_mm_s)
                t += amp / v
                keys_t.append(t)
                keys_s.append(s - amp)
                t += amp / v
                keys_t.append(t)
                keys_s.append(s)
            else:                                  # hold at the target
                t += rng.uniform(0.5, 3.0)
                keys_t.append(t)
                keys_s.append(s)
    kt = np.asarray(keys_t)
    ks = np.asarray(keys_s)

    def base(tt):
        i = np.clip(np.searchsorted(kt, tt, side="right") - 1, 0, len(kt) - 2)
        span = np.maximum(kt[i + 1] - kt[i], 1e-6)
        f = np.clip((tt - kt[i]) / span, 0, 1)
        return ks[i] + (ks[i + 1] - ks[i]) * _ease(f)

    tt = np.arange(n) / fps
    if withdraw_at is None:
        return base(tt)
    # full withdrawal at withdraw_at: out of the image, wait, re-insert to where the plan was, go on
    t1 = withdraw_at + w_out
    t2 = t1 + w_hold
    t3 = t2 + w_in
    s_w = float(base(np.array([withdraw_at]))[0])
    out = base(np.where(tt < withdraw_at, tt, np.maximum(tt - (t3 - withdraw_at), withdraw_at)))
    f_out = _ease(np.clip((tt - withdraw_at) / w_out, 0, 1))
    f_in = _ease(np.clip((tt - t2) / w_in, 0, 1))
    dest = -w_back
    seg1 = (tt >= withdraw_at) & (tt < t1)
    seg2 = (tt >= t1) & (tt < t2)
    seg3 = (tt >= t2) & (tt < t3)
    out[seg1] = s_w + (dest - s_w) * f_out[seg1]
    out[seg2] = dest
    out[seg3] = dest + (s_w - dest) * f_in[seg3]
    return out


def _tremor(rng, n, fps, amp):
    t = np.arange(n) / fps
    out = np.zeros(n)
    for _ in range(3):
        f = rng.uniform(7.0, 12.0)
        out += np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.3, 1.0)
    out += smooth_noise(rng, n, fps, 0.3, 1.0)
    return out * (amp / 2.0)


def _sphere_walk(rng, n, fps, rate):
    """Unit 3-vectors moving smoothly over the sphere (speckle mixing coefficients); ``rate`` is the
    typical angle (radians) moved per source frame."""
    knot_s = max(1.0 / (rate * fps), 1.0 / fps) if rate > 0 else 1e6
    v = np.stack([smooth_noise(rng, n, fps, knot_s, 1.0) for _ in range(3)], axis=1)
    v += rng.standard_normal(3) * 0.3
    nv = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(nv, 1e-6)


def make_motion(rng: np.random.Generator, cfg, n: int, fps: float, s_target: float, s_start: float,
                slab_mm: float) -> Motion:
    s_tip = plan_insertion(rng, cfg, n, fps, s_target, s_start)
    tr_mm = _u(rng, cfg.tremor_mm)
    tr_deg = _u(rng, cfg.tremor_deg)
    tremor_xy = np.stack([_tremor(rng, n, fps, tr_mm), _tremor(rng, n, fps, tr_mm)], axis=1)
    tremor_deg = _tremor(rng, n, fps, tr_deg)
    drift = _u(rng, cfg.probe_drift_mm)
    rot = _u(rng, cfg.probe_rot_deg)
    knot = rng.uniform(0.8, 2.5)
    probe_xy = np.stack([smooth_noise(rng, n, fps, knot, drift), smooth_noise(rng, n, fps, knot, drift * 0.3)], 1)
    probe_xy -= probe_xy[:1]
    probe_deg = smooth_noise(rng, n, fps, knot * 1.3, rot)
    probe_deg -= probe_deg[:1]
    # elevation: small wander inside the slab, plus maybe an out-of-plane episode
    elevation = rng.uniform(-0.3, 0.3) * slab_mm + smooth_noise(rng, n, fps, 1.5, 0.25 * slab_mm)
    if rng.random() < cfg.out_of_plane_prob and n > 3:
        t0 = rng.uniform(0.1, 0.75) * n
        ramp = rng.uniform(0.2, 1.0) * fps
        hold = rng.uniform(0.4, 2.5) * fps
        peak = rng.choice([-1, 1]) * slab_mm * rng.uniform(2.0, 4.0)
        k = np.arange(n)
        up = np.clip((k - t0) / ramp, 0, 1)
        down = np.clip((k - (t0 + ramp + hold)) / ramp, 0, 1)
        elevation = elevation + peak * _ease(up - down)
    # issue 17 motion, from its own stream (the draws above keep their values): probe moves (with the needle
    # withdrawn or out of plane during some), breathing, probe pressure, pulse
    mrng = rng.spawn(1)[0]
    mxy, mdeg, moves = probe_moves(mrng, cfg, n, fps)
    probe_xy = probe_xy + mxy
    probe_deg = probe_deg + mdeg
    if moves:
        _during_moves(mrng, cfg, moves, s_tip, elevation, fps, slab_mm)
    tissue_xy, comp, pulse = tissue_motion(mrng, cfg, n, fps)
    vel = np.gradient(s_tip) * fps if n > 1 else np.zeros(n)
    # drag: tissue follows the shaft with a lag (first-order), saturating
    drag = np.zeros(n)
    dmax = _u(rng, cfg.drag_mm)
    a = 1.0 / (0.3 * fps)
    acc = 0.0
    for k in range(n):
        acc += a * (np.clip(vel[k] * 0.15, -dmax, dmax) - acc)
        drag[k] = acc
    decor = speckle_decorrelation(probe_xy, probe_deg, _u(rng, cfg.elev_decorrelation))
    return Motion(s_tip, tremor_xy, tremor_deg, probe_xy, probe_deg, elevation, drag, decor, tissue_xy, comp,
                  pulse, moves)


def view_travel(rng: np.random.Generator, cfg, n: int, fps: float) -> tuple[float, float]:
    """(largest shift in mm, largest rocking in degrees) that the probe moves, breathing and compression of
    :func:`make_motion` will make, drawn from ``rng`` in the same order as make_motion draws them from its own
    stream (pass a generator equal to that stream): the simulator sizes its canvas with it before the motion."""
    xy, deg, moves = probe_moves(rng, cfg, n, fps)
    if moves:
        _during_moves(rng, cfg, moves, np.zeros(n), np.zeros(n), fps, 1.0)
    tissue_xy, comp, _ = tissue_motion(rng, cfg, n, fps)
    shift = float(np.abs(xy + tissue_xy).max(initial=0.0)) + float(np.max(comp, initial=0.0))
    return shift, float(np.abs(deg).max(initial=0.0))


def speckle_decorrelation(probe_xy: np.ndarray, probe_deg: np.ndarray, per_mm: float) -> np.ndarray:
    """Weight (0..1) of the second speckle realization per source frame. The speckle is fixed to the tissue:
    it changes only when the probe moves, and then only through the out-of-plane share of the movement
    (``per_mm`` of a full decorrelation per mm of probe travel; a hand-held probe that slides also tilts and
    slips out of plane). A still probe keeps the weight constant, so consecutive frames correlate."""
    n = len(probe_deg)
    if n < 2 or per_mm <= 0:
        return np.zeros(n)
    step = np.hypot(*np.diff(probe_xy, axis=0).T) + np.abs(np.diff(probe_deg)) * 0.5   # mm (a degree ~ 0.5 mm)
    phase = np.minimum(np.concatenate([[0.0], np.cumsum(step)]) * per_mm, 1.0) * np.pi
    return 0.5 - 0.5 * np.cos(phase)     # reaches the second realization and stays (two fields only)
