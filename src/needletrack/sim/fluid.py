"""Anechoic fluid in the synthetic tissue: vessels (round, oval, or cut along their length) and simple cysts, with
bright walls, posterior enhancement and refraction edge shadows (used by ``anatomy.breast``)."""
from __future__ import annotations

import math

import cv2
import numpy as np

from needletrack.sim.maps import _blur
from needletrack.sim.motion import smooth_noise


def _ui(rng, r) -> int:
    return int(rng.integers(int(r[0]), int(r[1]) + 1))


def _tube(rng, fluid, walls, c, half: float, r: float, ang: float, a_top: float, a_bot: float, th: int, mm: float):
    """A vessel cut along its length: a lumen of constant calibre ``2 r`` along a gently curving axis ``2 half``
    long, with bright near and far walls. At each end the vessel leaves the imaging slab: the lumen narrows over
    about one calibre (rounded ends, the slab cutting an oblique cylinder) and its walls fade with it."""
    n = max(int(2 * half / max(0.5 * mm, 1.0)), 8)
    t = np.linspace(-half, half, n)
    ca, sa = math.cos(math.radians(ang)), math.sin(math.radians(ang))
    bow = smooth_noise(rng, n, 1.0, max(n / 3, 2), 0.3 * r)
    e = max(rng.uniform(0.8, 2.0) * r, 1.0)
    w = r * np.sqrt(np.clip((half - np.abs(t)) / e, 0.0, 1.0))
    xc, yc = c[0] + t * ca, c[1] + t * sa + bow
    top = np.stack([xc + w * sa, yc - w * ca], 1)
    bot = np.stack([xc - w * sa, yc + w * ca], 1)
    cv2.fillPoly(fluid, [np.round(np.concatenate([top, bot[::-1]]) * 4).astype(np.int32)], 1, cv2.LINE_AA, shift=2)
    f = w / max(r, 1e-6)
    for k in range(n - 1):
        if f[k] > 0.05:
            for P, amp in ((top, a_top), (bot, a_bot)):
                cv2.line(walls, (int(P[k, 0]), int(P[k, 1])), (int(P[k + 1, 0]), int(P[k + 1, 1])), float(amp * f[k]),
                         th, cv2.LINE_AA)


def _ellipse_vessel(fluid, walls, cx_, cy_, ax_, ay_, ang_, a_top, a_bot, wth) -> None:
    """A round or oval fluid body: the lumen into ``fluid``, its near (top) and far walls into ``walls``."""
    c, a = (int(cx_), int(cy_)), (max(int(ax_), 1), max(int(ay_), 1))
    cv2.ellipse(fluid, c, a, ang_, 0, 360, 1, -1, cv2.LINE_AA)
    cv2.ellipse(walls, c, a, ang_, 180, 360, a_top, wth, cv2.LINE_AA)
    cv2.ellipse(walls, c, a, ang_, 0, 180, a_bot, wth, cv2.LINE_AA)


def add_fluid(rng, cfg, shape, echo, lines, thin, b_skin, margin: int, depth_px: float, sp: float,
              atten_db_mm: float, fixed=(), avoid=()) -> None:
    """Add vessels (``cfg.vessels``) and a cyst (``cfg.cyst_prob``) to the maps ``echo``, ``lines`` and ``thin``
    (in place): the lumen is anechoic and clears the reflectors drawn so far, its walls are bright.

    ``fixed``: vessels placed by the caller, ``(cx, cy, ax, ay, angle_deg)`` in canvas px (drawn first, round or
    oval cross-sections); ``avoid``: boxes ``(x0, x1, y0, y1)`` the random ones keep clear of (a nerve)."""
    Hc, Wc = shape
    mm = 1.0 / sp
    # anechoic fluid: vessels (round or oval, bright walls) and simple cysts (round, thin bright capsule).
    # Fluid does not attenuate: below it the tissue is brighter (posterior enhancement, from the attenuation the
    # beam did not suffer); the curved walls refract and leave thin edge shadows.
    fluid = np.zeros(shape, np.uint8)
    walls = np.zeros(shape, np.float32)
    n_ves = _ui(rng, getattr(cfg, "vessels", (0, 2)))
    n_cyst = int(rng.random() < getattr(cfg, "cyst_prob", 0.0))
    edges = []
    boxes = [tuple(b) for b in avoid]
    for cx_, cy_, ax_, ay_, ang_ in fixed:
        boxes.append((cx_ - ax_ - mm, cx_ + ax_ + mm, cy_ - ay_ - mm, cy_ + ay_ + mm))
        a_top, a_bot = float(rng.uniform(1.0, 4.0)), float(rng.uniform(0.5, 2.0))
        wth = max(1, int(round(rng.uniform(0.15, 0.4) * mm)))
        _ellipse_vessel(fluid, walls, cx_, cy_, ax_, ay_, ang_, a_top, a_bot, wth)
        edges.append((cx_, cy_, ax_, ay_, ang_))
    for kind in ["vessel"] * n_ves + ["cyst"] * n_cyst:
        tube = False
        if kind == "vessel":
            ax_ = rng.uniform(0.8, 3.5) * mm
            ay_ = ax_ * rng.uniform(0.5, 1.0)
            tube = rng.random() < 0.4        # cut along its length: a tube of constant calibre (at most 4 mm)
            if tube:
                ay_ = min(ay_, 2.0 * mm)
        else:
            ax_ = rng.uniform(1.5, 6.0) * mm
            ay_ = ax_ * rng.uniform(0.6, 1.0)
        for _ in range(6):                   # fluid bodies do not overlap (their walls would cross the lumen)
            cx_ = rng.uniform(0.05, 0.95) * Wc
            i = int(np.clip(cx_, 0, Wc - 1))
            cy_ = float(np.clip(rng.uniform(b_skin[i] + ay_ + mm, margin + 0.9 * depth_px), b_skin[i] + ay_, None))
            ang_ = rng.uniform(-15, 15)
            half = min(ay_ * rng.uniform(4.0, 12.0), rng.uniform(5.0, 15.0) * mm) if tube else ax_   # 10-30 mm at most
            ext = half * abs(math.cos(math.radians(ang_))) + ay_ + mm
            box = (cx_ - ext, cx_ + ext, cy_ - ay_ - half * abs(math.sin(math.radians(ang_))) - mm,
                   cy_ + ay_ + half * abs(math.sin(math.radians(ang_))) + mm)
            if not any(b[0] < box[1] and box[0] < b[1] and b[2] < box[3] and box[2] < b[3] for b in boxes):
                break
        else:
            continue
        boxes.append(box)
        a_top, a_bot = float(rng.uniform(1.0, 4.0)), float(rng.uniform(0.5, 2.0))
        wth = max(1, int(round(rng.uniform(0.15, 0.4) * mm)))
        if tube:
            _tube(rng, fluid, walls, (cx_, cy_), half, ay_, ang_, a_top, a_bot, wth, mm)
            continue
        _ellipse_vessel(fluid, walls, cx_, cy_, ax_, ay_, ang_, a_top, a_bot, wth)
        edges.append((cx_, cy_, ax_, ay_, ang_))
    if fluid.any():
        ff = cv2.GaussianBlur(fluid.astype(np.float32), (0, 0), max(0.2 * mm, 0.7))
        # the lumen is anechoic whatever crossed it (a faint even floor: at 0.3 % of the tissue a bright fascia
        # band across a vessel still showed as a line inside it)
        echo *= 1 - ff
        echo += ff * np.float32(2e-4)
        lines *= 1 - ff
        thin *= 1 - ff
        lines += walls
        # posterior enhancement: fluid path length (mm) along the beam x the tissue's two-way attenuation
        path_mm = np.cumsum(ff, axis=0) * np.float32(sp)
        enh = np.power(np.float32(10.0), np.minimum(path_mm * np.float32(atten_db_mm), 8.0) / np.float32(10.0))
        enh = _blur(enh, max(0.5 * mm, 1.0))
        echo *= np.where(ff > 0.5, np.float32(1.0), enh)
        # edge shadows: refraction at the lateral walls, thin dark columns from the widest point down
        for cx_, cy_, ax_, ay_, ang_ in edges:
            if rng.random() < 0.6:
                col = np.zeros(shape, np.float32)
                for sx_ in (-1, 1):
                    x_ = int(cx_ + sx_ * ax_ * math.cos(math.radians(ang_)))
                    cv2.line(col, (x_, int(cy_)), (x_, Hc), 1.0, max(1, int(round(0.5 * mm))))
                col = _blur(col, max(0.4 * mm, 1.0))
                echo *= 1 - np.float32(rng.uniform(0.3, 0.7)) * np.clip(col * 2.0, 0, 1)
