"""The needle: calibrated brightness, appearance (specular shaft, comet tail, bevel tip, shadow) and
ground truth (the in-plane visible extent at the shaft's physical width).

Brightness calibration. van de Berg et al. (Ultrasound Med Biol 2019, data by the MISIT lab, CC BY-SA
4.0; summary in ../shared/data/needle_visibility) measured the contrast-to-noise ratio of the shaft
and tip of biopsy needles rotated through 25-180 deg in a PVA phantom. The shaft is brightest at
platform angle ~77.5 deg, which we take as normal incidence, so ``delta = |angle - 77.5|`` is the angle
between the beam and the shaft normal. Our own least-squares fit to the Bevel_22G and Trocar_18G
medians (rms residual 0.7 CNR) gives

    shaft CNR(delta) = 6.23 exp(-(delta / 11.7)^2) + 6.69 exp(-delta / 66.5)
    tip   CNR(delta) = 11.9 exp(-delta / 130)

Over fully developed speckle a CNR of c means a mean log-brightness ``c * 5.57 dB`` above the
speckle's (5.57 dB = std of a log-compressed Rayleigh envelope). Taken literally the phantom's best
CNR (~12) would put the needle 67 dB above tissue, far beyond what a 50-70 dB display shows: the PVA
phantom is darker and smoother than breast tissue. So the angle dependence (the curve's shape) is
taken from the data, and the absolute level is ``contrast_scale * 5.57 dB`` per CNR unit plus
``needle_gain_db``, both drawn per sequence from the preset; the measured CNR of the rendered frames
per preset is reported in the README.
"""
from __future__ import annotations

import math

import numpy as np

from needletrack.sim.bmode import LOG_RAYLEIGH_STD_DB

SHAFT_FIT = (6.23, 11.7, 6.69, 66.5)
TIP_FIT = (11.9, 130.0)
PEAK_PLATFORM_DEG = 77.5
EULER_DB = 2.51  # mean of 10log10 of an exponential (speckle intensity) variable is -2.51 dB


def shaft_cnr(delta_deg):
    """Expected shaft CNR at ``delta_deg`` between the beam and the shaft normal (calibrated curve)."""
    a, w, b, L = SHAFT_FIT
    d = np.abs(np.asarray(delta_deg, dtype=np.float64))
    return a * np.exp(-(d / w) ** 2) + b * np.exp(-d / L)


def tip_cnr(delta_deg):
    a, L = TIP_FIT
    d = np.abs(np.asarray(delta_deg, dtype=np.float64))
    return a * np.exp(-d / L)


def cnr_to_power(cnr, ref_power: float, gain_db: float = 0.0, scale: float = 1.0):
    """Echo power of a specular target whose CNR over speckle of mean power ``ref_power`` is ``cnr``
    (``scale`` < 1 compresses the phantom's contrast to tissue, see the module notes)."""
    db = np.asarray(cnr, dtype=np.float64) * (LOG_RAYLEIGH_STD_DB * scale) - EULER_DB + gain_db
    return ref_power * np.power(10.0, db / 10.0)


def incidence_deg(bx, by, dx, dy):
    """Angle (degrees) between the beam (bx, by) and the normal of a shaft with direction (dx, dy)."""
    dot = np.clip(np.abs(bx * dx + by * dy), 0.0, 1.0)
    return np.degrees(np.arcsin(dot))


def longest_run(flags: np.ndarray):
    """(start, stop) of the longest run of True in a 1D bool array; None if none.
    Ties go to the later run (nearer the tip)."""
    if not flags.any():
        return None
    f = np.concatenate([[False], flags, [False]]).astype(np.int8)
    d = np.diff(f)
    starts = np.nonzero(d == 1)[0]
    stops = np.nonzero(d == -1)[0]
    lens = stops - starts
    k = len(lens) - 1 - int(np.argmax(lens[::-1]))
    return int(starts[k]), int(stops[k])


def cross_profile(u: np.ndarray, r: float, sigma: float, spacing: float, decay: float, count: int,
                  back_wall: float, fill: float = 0.0, texture=None, spread: float = 0.0,
                  haze: float = 0.0, tail_max: float = math.inf, behind=None) -> np.ndarray:
    """Echo power across the shaft at signed distance ``u`` (px, positive away from the probe).

    The front wall is a specular line at ``-r`` as thick as the axial resolution (an amplitude pulse of
    width ``sigma``: power ``exp(-u^2/sigma^2)``, FWHM 1.67 sigma). The back wall, one inner diameter
    (``spacing``) deeper, echoes ``back_wall`` times as bright, as thin. ``fill``: faint echo from inside the lumen.

    Below it, a comet tail, not a ladder (seventh pass). The lumen's round trips still repeat every ``spacing``,
    but the clean repeats lose more than the back-wall echo did (amplitude ratio ``decay ** 3`` per round trip:
    the curved lumen sends most of each bounce away from the probe) and each is spread along the beam in
    proportion to its extra path (:func:`repeat_sigma`: the k-th round trip through a cylinder of diameter
    ``spacing`` is smeared over ``g (k - 1) spacing``, ``g`` = 0.15-0.4 from ``spread``, energy kept). What they
    lose feeds a diffuse tail (multiple paths through the wall and lumen that do not return as one clean repeat):
    ``haze`` times the back wall's echo at the back wall, falling by ``decay ** 2`` per round trip
    (:func:`tail_length`, at most ``tail_max`` px), so the repeats are soft swells on a continuous, decaying
    tail rather than copies of the wall. The repeats fade out (cos^2 over the count).

    ``texture``: None or ``(front, back, tail)``, arrays broadcastable to ``u``: the front wall's, the back wall's
    and the tail's (repeats and haze) brightness factors, mean about 1 (``needle_echo`` passes textures that vary
    over about a millimetre along the shaft, not per pixel).

    ``behind``: None or a factor broadcastable to ``u`` on everything but the front wall (lumen, back wall, tail):
    where the bevel has cut the tube away, only the front wall echoes."""
    sig = max(sigma, 0.5)
    u0 = u + r
    t_front, t_back, t_tail = texture if texture is not None else (1.0, 1.0, 1.0)
    front = np.exp((-1.0 / sig ** 2) * u0 ** 2) * t_front   # power profile of an amplitude PSF of width sigma
    out = (back_wall * t_back) * np.exp((-1.0 / sig ** 2) * (u0 - spacing) ** 2)
    if fill > 0:
        out = out + fill * np.clip(u0 / sig + 0.5, 0, 1) * np.clip((spacing - u0) / sig + 0.5, 0, 1)
    n = int(count) + 1
    tail = None
    d2 = max(decay, 0.0) ** 3
    amp = back_wall * d2
    for k in range(2, n + 1):
        if amp <= 0:
            break
        sk = repeat_sigma(sig, spacing, spread, k)
        wk = math.cos(0.5 * math.pi * (k - 1) / n) ** 2 if haze > 0 else 1.0
        e = (wk * amp * sig / sk) * np.exp((-1.0 / sk ** 2) * (u0 - k * spacing) ** 2)
        tail = e if tail is None else tail + e
        amp *= d2
    if haze > 0 and count > 0:
        ub = u0 - spacing                           # below the back wall
        h = (haze * back_wall) * np.exp(-np.clip(ub, 0, None) / min(tail_length(spacing, decay), tail_max)) \
            * np.clip(ub / sig + 0.5, 0, 1)
        tail = h if tail is None else tail + h
    if tail is not None:
        out = out + tail * t_tail
    if behind is not None:
        out = out * behind
    return front + out


def repeat_sigma(sigma: float, spacing: float, spread: float, k: int) -> float:
    """Width (px, along the beam) of the k-th echo below the front wall (k = 1: the back wall, as thin as the front
    wall); later round trips are smeared over ``g (k - 1) spacing``, ``g = 0.15 + 0.25 spread``."""
    g = 0.15 + 0.25 * max(spread, 0.0)
    return math.hypot(sigma, g * max(k - 1, 0) * spacing)


def tail_length(spacing: float, decay: float) -> float:
    """The e-folding length (px) of the comet tail's diffuse part: its amplitude falls by ``decay ** 2`` per
    round trip (the clean repeats by ``decay ** 3``: what they lose feeds the diffuse paths)."""
    return spacing / (2.0 * max(-math.log(max(decay, 1e-3)), 0.7))


def tip_profile(t: np.ndarray, L: float, ratio: float, fade: float) -> np.ndarray:
    """Brightness factor along the shaft (``t`` px from its visible start to the tip at ``L``) at shallow
    incidence, where the specular shaft dominates: 1 along the shaft, falling linearly to ``ratio`` (0.4-1)
    over the last ``fade`` px (the bevel and the tip's rounded end reflect away from the probe)."""
    f = np.clip((L - np.asarray(t, dtype=np.float64)) / max(fade, 1.0), 0.0, 1.0)
    return ratio + (1.0 - ratio) * f


def shallow_weight(delta_deg) -> np.ndarray:
    """1 at shallow incidence (the shaft's specular echo dominates), 0 at steep incidence (the bevel tip
    dominates, as in the needle_visibility data); the change is smooth between 15 and 25 degrees."""
    d = np.abs(np.asarray(delta_deg, dtype=np.float64))
    return np.clip((25.0 - d) / 10.0, 0.0, 1.0)


def soft_ends(s: np.ndarray, s0: float, s1: float, width: float) -> np.ndarray:
    w = max(width, 0.5)
    return np.clip((s - s0) / w + 0.5, 0, 1) * np.clip((s1 - s) / w + 0.5, 0, 1)


def gauge_width_mm(gauge: int) -> float:
    from needletrack.sim.config import GAUGE_OD_MM

    g = int(np.clip(gauge, 16, 22))
    return GAUGE_OD_MM[g]


def rotate(vx, vy, deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return vx * c - vy * s, vx * s + vy * c
