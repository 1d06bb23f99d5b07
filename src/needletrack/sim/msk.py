"""Musculoskeletal scenes as echogenicity maps on the beam-coordinate canvas (same maps as ``anatomy.breast``).

``muscle``: skeletal muscle as a forearm, thigh or neck scan shows it. Under the skin and a subcutaneous fat
layer (hypoechoic, thin echogenic septa) lie one to three muscle bellies separated by bright, thick fascia and
aponeurosis bands (0.5-1.5 mm). A belly is hypoechoic, crossed by many fine, long, roughly parallel bright
striations (perimysium around the fascicles), tilted by the pennation angle (``cfg.pennation_deg``) and spaced
``cfg.striation_mm`` apart; they bend gently, run on for centimetres and break up along their length. Sometimes
(``cfg.bone_prob``) a bone surface closes the scene: a very bright curved cortex line with an acoustic shadow
below it (dark, faint reverberations of the cortex).

``nerve``: a nerve-block view. Layered muscles and fascia as above (flatter fibres) and, in a fascial plane
between two bellies, a peripheral nerve (``cfg.nerve_mm`` across, round to oval): a honeycomb of hypoechoic
fascicles in a hyperechoic epineurium, or (a root) one to three large dark fascicles in a bright rim; beside it
an artery (round, anechoic; the sequence's pulse is centred on it) and often a vein (oval, flattened).

The striations are a flow-field texture (``maps.flow_lowfreq``): noise whose correlation runs a few mm along
curved streamlines and a fraction of a millimetre across them, so that the lines stay continuous along the
fibres however the fibres bend. These long bright lines are the needle-like hard negatives of MSK and
regional-anaesthesia scans.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from needletrack.sim.anatomy import Anatomy, _curve, _finish, _fine_texture, _interface, _u, _ui
from needletrack.sim.maps import _blur, flow_lowfreq, lowfreq


def _skin_fat(rng, cfg, shape, mm: float, margin: int, depth_px: float, echo, lines, thin):
    """Stand-off, skin entry echo, dermis and the subcutaneous fat with its septa. Returns (top, b_skin, b_fat)."""
    Hc, Wc = shape
    rows = np.arange(Hc, dtype=np.float32)[:, None]
    if rng.random() < getattr(cfg, "standoff_prob", 0.0):
        top = margin + _u(rng, getattr(cfg, "standoff_mm", (2.0, 8.0))) * mm
    else:
        top = margin + (rng.uniform(0.0, 1.0) * mm if rng.random() < 0.3 else 0.0)
    skin = _u(rng, cfg.skin_mm) * mm
    fat_t = min(rng.uniform(1.5, 10.0) * mm, 0.3 * depth_px)
    b_skin = _curve(rng, Wc, top + skin, 0.3 * mm, 40 * mm)
    b_fat = _curve(rng, Wc, top + skin + fat_t, rng.uniform(0.3, 1.2) * mm, rng.uniform(10, 25) * mm)
    b_fat = np.maximum(b_fat, b_skin + 1.0 * mm)
    fat_lvl = rng.uniform(0.06, 0.16)
    echo[:] = fat_lvl
    echo[(rows >= top) & (rows < b_skin[None, :])] = rng.uniform(0.3, 0.7)
    echo[rows[:, 0] < top] = 0.003
    sk = np.zeros(shape, np.float32)
    pts = np.stack([np.arange(Wc), np.full(Wc, top + 0.3 * mm)], 1).astype(np.int32)
    cv2.polylines(sk, [pts], False, float(rng.uniform(2.0, 6.0)), max(1, int(round(0.3 * mm))), cv2.LINE_AA)
    lines += sk
    # fat septa: thin echogenic strands, mostly along the skin, some oblique, a few mm to a couple of cm long
    fat_zone = ((rows >= b_skin[None, :]) & (rows < b_fat[None, :])).astype(np.float32)
    sep = np.zeros(shape, np.float32)
    for _ in range(int(Wc / (rng.uniform(4, 10) * mm)) + 1):
        x0 = rng.uniform(-0.1, 1.0) * Wc
        i = int(np.clip(x0, 0, Wc - 1))
        y0 = rng.uniform(b_skin[i], max(b_fat[i], b_skin[i] + 1))
        L = rng.uniform(2.0, 12.0) * mm
        a = math.radians(rng.uniform(-30, 30))
        n = max(int(L / max(0.7 * mm, 1.0)), 3)
        t = np.linspace(0, L, n)
        xs = x0 + t * math.cos(a)
        ys = y0 + t * math.sin(a) + _curve(rng, n, 0.0, 0.6 * mm, max(n / 3, 2))
        amp = float(rng.uniform(0.15, 0.8))
        th = max(1, int(round(rng.uniform(0.1, 0.3) * mm)))
        for k in range(n - 1):
            cv2.line(sep, (int(xs[k]), int(ys[k])), (int(xs[k + 1]), int(ys[k + 1])), amp, th, cv2.LINE_AA)
    thin += sep * fat_zone
    return top, b_skin, b_fat


def _bellies(rng, cfg, shape, mm: float, margin: int, depth_px: float, b_fat, echo, lines, n_bellies: int,
             pen_scale: float = 1.0):
    """Muscle bellies from the fat down to the canvas bottom, with the fascia and aponeurosis bands between them.
    Returns (boundaries, angles, mus): the band depths per canvas column (the first is the superficial fascia),
    each belly's fibre angle (degrees, positive = the fibres descend to the right) and the bellies' extent
    (float map; their fine texture is drawn here, along the fibres)."""
    Hc, Wc = shape
    cols = np.arange(Wc, dtype=np.float32)
    bottom = margin + depth_px
    span = max(bottom - float(np.mean(b_fat)), 4 * mm)
    # band depths: the superficial fascia on the fat, then splits at random shares of the depth below it
    cuts = np.sort(rng.uniform(0.25, 0.85, n_bellies - 1)) if n_bellies > 1 else np.zeros(0)
    bounds = [b_fat + rng.uniform(0.0, 0.5) * mm]
    for c in cuts:
        tilt = math.tan(math.radians(rng.uniform(-8, 8)))
        b = _curve(rng, Wc, float(np.mean(b_fat)) + c * span, rng.uniform(0.5, 2.5) * mm, rng.uniform(10, 25) * mm)
        b = b + (cols - Wc / 2.0) * tilt
        bounds.append(np.maximum(b, bounds[-1] + 3.0 * mm))
    edges = bounds + [np.full(Wc, float(Hc + 4 * mm))]
    angles = []
    mus = np.zeros(shape, np.float32)               # inside a belly (its texture follows the fibres)
    lo, hi = getattr(cfg, "pennation_deg", (5.0, 30.0))
    for k in range(n_bellies):
        top_, bot_ = edges[k], edges[k + 1]
        y0 = int(max(np.floor(top_.min()) - 2, 0))
        y1 = int(min(np.ceil(bot_.max()) + 2, Hc))
        if y1 - y0 < 4:
            angles.append(0.0)
            continue
        slope = math.degrees(math.atan2(float(top_[-1] - top_[0]), Wc))   # the fibres leave the band at their angle
        ang = float(rng.uniform(lo, hi)) * pen_scale * rng.choice([-1.0, 1.0]) + slope
        angles.append(ang)
        t = math.radians(ang)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        xs = cols[None, :]
        # streamlines: straight fibres at the angle, bent gently (a smooth displacement across them)
        bend = lowfreq(rng, (y1 - y0, Wc), rng.uniform(10, 20) * mm, rng.uniform(20, 40) * mm)
        v = -xs * np.float32(math.sin(t)) + ys * np.float32(math.cos(t)) + bend * np.float32(rng.uniform(0.2, 0.7) * mm)
        u = xs * np.float32(math.cos(t)) + ys * np.float32(math.sin(t))
        gap = _u(rng, getattr(cfg, "striation_mm", (0.5, 2.0))) * mm
        # perimysium: thin bright lines about one spacing apart across the fibres (a sharpened cosine of the
        # across-fibre coordinate); the phase wanders slowly (5-15 mm along, 1.5 spacings across), so the lines
        # drift apart, merge and split; their brightness differs from line to line and along each line
        ph = np.float32(2 * math.pi / gap) * v + np.float32(rng.uniform(0.8, 1.5)) * flow_lowfreq(
            rng, u, v, rng.uniform(6.0, 15.0) * mm, 3.0 * gap)
        p = float(rng.uniform(1.5, 4.0))
        ridge = np.cos(ph, out=ph)
        ridge *= np.float32(0.5)
        ridge += np.float32(0.5)
        ridge = cv2.pow(ridge, p)
        ridge *= cv2.exp(np.float32(0.6) * flow_lowfreq(rng, u, v, rng.uniform(3.0, 8.0) * mm, 0.7 * gap))
        # broken: the lines fade in and out along their length (2-6 mm), a few neighbours at a time
        brk = flow_lowfreq(rng, u, v, rng.uniform(2.0, 6.0) * mm, rng.uniform(1.0, 3.0) * mm)
        brk = np.clip(brk * np.float32(1.2) + np.float32(rng.uniform(0.2, 0.8)), 0, 1)
        lvl = rng.uniform(0.1, 0.3)
        ridge *= brk
        ridge *= np.float32(_u(rng, getattr(cfg, "striation_gain", (1.5, 5.0))))
        ridge += np.float32(0.5)
        body = ridge
        logb = np.float32(0.3) * lowfreq(rng, (y1 - y0, Wc), rng.uniform(3, 8) * mm, rng.uniform(5, 15) * mm)
        # finer structure along the same flow (the breast's strand fields, here following the fibres: lateral
        # continuity of about a millimetre along them, fine detail across them), log-normal
        for cu, cv_, amp in ((rng.uniform(0.5, 1.2), rng.uniform(0.25, 0.5), rng.uniform(0.35, 0.6)),
                             (rng.uniform(4.0, 10.0), rng.uniform(0.8, 2.0), rng.uniform(0.5, 0.8))):
            logb += np.float32(amp) * flow_lowfreq(rng, u, v, cu * mm, cv_ * mm) - np.float32(0.5 * amp * amp)
        body *= cv2.exp(logb)
        body *= np.float32(lvl)
        # sparse bright echoes: short thin strands along the fibres, in clusters
        g = flow_lowfreq(rng, u, v, rng.uniform(1.0, 4.0) * mm, rng.uniform(0.15, 0.3) * mm)
        st = np.maximum(g - np.float32(rng.uniform(1.2, 1.7)), 0)
        st *= np.clip(lowfreq(rng, (y1 - y0, Wc), 6 * mm, 10 * mm) - np.float32(rng.uniform(-0.3, 0.6)), 0, 1)
        st *= st
        st *= np.float32(rng.uniform(10.0, 30.0))
        st += np.float32(1.0)
        body *= st
        inside = (ys >= top_[None, :]) & (ys < bot_[None, :])
        np.copyto(echo[y0:y1], body, where=inside)
        np.copyto(mus[y0:y1], np.float32(1.0), where=inside)
    # fascia and aponeuroses: thick echogenic bands (speckled fibrous tissue) with bright specular edges
    for k, b in enumerate(bounds):
        th = rng.uniform(0.5, 1.5) * mm
        y0 = int(max(np.floor(b.min()) - 2, 0))
        y1 = int(min(np.ceil(b.max() + th) + 3, Hc))
        if y1 - y0 < 2:
            continue
        rows = np.arange(y0, y1, dtype=np.float32)[:, None]
        d = np.abs(rows - (b + np.float32(th / 2))[None, :])
        band = np.clip((np.float32(th / 2) - d) / np.float32(max(0.15 * mm, 0.5)) + 0.5, 0, 1).astype(np.float32)
        lvl = np.float32(rng.uniform(0.8, 2.5))
        e = echo[y0:y1]
        e *= 1 - band
        mus[y0:y1] *= 1 - band
        e += band * lvl * cv2.exp(np.float32(0.4) * lowfreq(rng, (y1 - y0, Wc), 1.0 * mm, 4.0 * mm))
        lines += _interface(rng, shape, b, float(rng.uniform(1.0, 4.0)), max(1, int(round(0.3 * mm))), mm,
                            gaps=rng.uniform(0.05, 0.3))
        if rng.random() < 0.5:
            lines += _interface(rng, shape, b + th, float(rng.uniform(0.5, 2.0)), max(1, int(round(0.25 * mm))), mm,
                                gaps=0.4)
    return bounds, angles, mus


def _bone(rng, shape, mm: float, margin: int, depth_px: float, echo, lines, lo_frac: float, hi_frac: float):
    """A bone surface: a very bright curved cortex line, an acoustic shadow below it (almost no echo), faint
    reverberations of the cortex under it. Returns (x0, x1, curve) or None."""
    Hc, Wc = shape
    rows = np.arange(Hc, dtype=np.float32)[:, None]
    cols = np.arange(Wc, dtype=np.float32)
    y0 = margin + rng.uniform(lo_frac, hi_frac) * depth_px
    xc = rng.uniform(0.2, 0.8) * Wc
    R = rng.uniform(20.0, 80.0) * mm                  # radius of the cortex's curvature (long or short axis)
    half = rng.uniform(8.0, 40.0) * mm
    x0, x1 = max(xc - half, 0.0), min(xc + half, Wc - 1.0)
    yb = y0 + (cols - xc) ** 2 / (2 * R) + (cols - xc) * np.float32(math.tan(math.radians(rng.uniform(-8, 8))))
    yb = yb + _curve(rng, Wc, 0.0, 0.3 * mm, rng.uniform(3, 8) * mm)
    yb = yb.astype(np.float32)
    on = ((cols >= x0) & (cols <= x1)).astype(np.float32)
    # the ends of the visible cortex dip away from the beam and fade over a few mm
    ramp = np.clip(np.minimum(cols - x0, x1 - cols) / (2.0 * mm), 0, 1) * on
    under = (rows > yb[None, :]).astype(np.float32) * ramp[None, :]
    shadow = _blur(under, max(0.4 * mm, 1.0))
    dark = 1 - np.float32(rng.uniform(0.9, 0.98)) * shadow
    echo *= dark
    lines *= dark                                     # the fascia drawn below it lies in the shadow too
    amp = float(rng.uniform(30.0, 80.0))          # the brightest echo of the scene
    th = max(1, int(round(rng.uniform(0.4, 0.9) * mm)))
    cort = np.zeros(shape, np.float32)
    xs = np.arange(int(x0), int(x1) + 1, max(int(0.5 * mm), 1))
    for a, b in zip(xs[:-1], xs[1:]):
        cv2.line(cort, (int(a), int(round(yb[a]))), (int(b), int(round(yb[b]))), amp * float(ramp[a]), th, cv2.LINE_AA)
    lines += cort
    # reverberations between the cortex and the probe (twice its depth, faint) and just under it (ringing)
    gap = rng.uniform(0.6, 1.5) * mm
    for k in range(1, 4):
        sh = int(round(k * gap))
        rep = np.zeros_like(cort)
        rep[sh:] = cort[:-sh] if sh > 0 else cort
        lines += rep * np.float32(rng.uniform(0.03, 0.1) * 0.5 ** (k - 1) / amp)   # faint: tissue-level at most
    d2 = int(round(float(np.mean(yb[int(x0):int(x1) + 1])) - margin))
    if 0 < d2 and margin + 2 * d2 < Hc and rng.random() < 0.5:
        rep = np.zeros_like(cort)
        rep[d2:] = cort[:-d2]
        lines += rep * np.float32(rng.uniform(0.05, 0.2) / amp)
    return x0, x1, yb


def _nerve(rng, cfg, shape, mm: float, cx: float, cy: float, echo, lines):
    """A peripheral nerve centred at (cx, cy): fascicles in an echogenic epineurium. Returns (rx, ry)."""
    Hc, Wc = shape
    d = _u(rng, getattr(cfg, "nerve_mm", (3.0, 10.0))) * mm
    rx = d / 2
    ry = rx * rng.uniform(0.55, 1.0)
    ang = rng.uniform(-20, 20)
    x0, x1 = int(max(cx - rx - 3 * mm, 0)), int(min(cx + rx + 3 * mm, Wc))
    y0, y1 = int(max(cy - rx - 3 * mm, 0)), int(min(cy + rx + 3 * mm, Hc))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return rx, ry
    h, w = y1 - y0, x1 - x0
    c = (cx - x0, cy - y0)
    body = np.zeros((h, w), np.float32)
    cv2.ellipse(body, (int(c[0]), int(c[1])), (max(int(rx), 1), max(int(ry), 1)), ang, 0, 360, 1.0, -1, cv2.LINE_AA)
    inner = np.float32(rng.uniform(0.5, 1.3)) * np.exp(np.float32(0.3) * lowfreq(rng, (h, w), 0.8 * mm, 0.8 * mm))
    fasc = np.zeros((h, w), np.float32)
    ca, sa = math.cos(math.radians(ang)), math.sin(math.radians(ang))
    if rng.random() < 0.3:             # a root: one to three large fascicles fill most of it
        nf = _ui(rng, (1, 3))
        rf = rx * (0.75 if nf == 1 else 0.45)
        for j in range(nf):
            off = (j - (nf - 1) / 2) * 1.9 * rf
            fx, fy = c[0] + off * ca, c[1] + off * sa
            cv2.ellipse(fasc, (int(fx), int(fy)), (max(int(rf), 1), max(int(rf * ry / rx), 1)), ang, 0, 360, 1.0, -1,
                        cv2.LINE_AA)
    else:                              # a honeycomb of small fascicles, packed without touching
        placed = []
        for _ in range(120):
            rf = min(rng.uniform(0.3, 0.9) * mm, 0.35 * ry)
            p, q = rng.uniform(-1, 1, 2)
            if p * p + q * q > 1:
                continue
            lx, ly = p * (rx - 1.2 * rf), q * (ry - 1.2 * rf)
            fx, fy = c[0] + lx * ca - ly * sa, c[1] + lx * sa + ly * ca
            if all(math.hypot(fx - a, fy - b) > rf + r2 + 0.12 * mm for a, b, r2 in placed):
                placed.append((fx, fy, rf))
                cv2.ellipse(fasc, (int(fx), int(fy)), (max(int(rf), 1), max(int(rf * rng.uniform(0.7, 1.0)), 1)),
                            rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA)
    fasc = cv2.GaussianBlur(fasc, (0, 0), max(0.1 * mm, 0.5)) * body
    f_lvl = np.float32(rng.uniform(0.03, 0.15))
    content = inner * (1 - fasc) + f_lvl * fasc
    soft = cv2.GaussianBlur(body, (0, 0), max(0.2 * mm, 0.6))
    sl = echo[y0:y1, x0:x1]
    sl *= 1 - soft
    sl += content * soft
    lines[y0:y1, x0:x1] *= 1 - soft              # the fascia splits around the nerve
    rim = np.zeros((h, w), np.float32)
    cv2.ellipse(rim, (int(c[0]), int(c[1])), (max(int(rx), 1), max(int(ry), 1)), ang, 0, 360,
                float(rng.uniform(1.0, 3.5)), max(1, int(round(rng.uniform(0.3, 0.6) * mm))), cv2.LINE_AA)
    lines[y0:y1, x0:x1] += rim
    return rx, ry


def _scene(kind, rng, cfg, shape, sp, margin, depth_px, atten_db_mm):
    Hc, Wc = shape
    mm = 1.0 / sp
    echo = np.zeros(shape, np.float32)
    lines = np.zeros(shape, np.float32)
    thin = np.zeros(shape, np.float32)
    top, b_skin, b_fat = _skin_fat(rng, cfg, shape, mm, margin, depth_px, echo, lines, thin)
    nb = _ui(rng, (1, 3)) if kind == "muscle" else _ui(rng, (2, 3))
    bounds, angles, mus = _bellies(rng, cfg, shape, mm, margin, depth_px, b_fat, echo, lines, nb,
                              pen_scale=1.0 if kind == "muscle" else 0.5)
    info = {"kind": kind, "belly_angles_deg": [round(a, 2) for a in angles],
            "bands": [float(np.median(b)) for b in bounds], "band_curves": bounds}
    bone_p = getattr(cfg, "bone_prob", 0.4) * (1.0 if kind == "muscle" else 0.5)
    bone = None
    if rng.random() < bone_p and depth_px * sp > 20:
        lo = 0.55 if kind == "muscle" else 0.75
        bone = _bone(rng, shape, mm, margin, depth_px, echo, lines, lo, 0.92)
        info["bone"] = {"x0": bone[0], "x1": bone[1], "y_mid": float(bone[2][int((bone[0] + bone[1]) / 2)])}
    fluid_kw = {}
    tx = rng.uniform(0.3, 0.7) * Wc
    ty = margin + rng.uniform(0.3, 0.6) * depth_px
    # random fluid: at most one vessel besides those placed here, cysts rare (the preset's ranges cap them)
    vs = getattr(cfg, "vessels", (0, 2))
    fcfg = cfg.replace(vessels=(min(vs[0], 1), min(vs[1], 1)), cyst_prob=min(getattr(cfg, "cyst_prob", 0.0), 0.03))
    if kind == "nerve":
        # the nerve lies in a fascial plane between two bellies, in the upper two thirds of the image
        deep = [b for b in bounds[1:] if float(np.median(b)) < margin + 0.7 * depth_px] or [bounds[-1]]
        b = deep[int(rng.integers(len(deep)))]
        nx = rng.uniform(0.3, 0.7) * Wc
        ny = float(np.clip(b[int(nx)] + rng.uniform(-0.5, 1.0) * mm, margin + 0.2 * depth_px, margin + 0.75 * depth_px))
        if bone is not None:
            ny = min(ny, float(bone[2][int(nx)]) - 8 * mm)
        rx, ry = _nerve(rng, cfg, shape, mm, nx, ny, echo, lines)
        info["nerve"] = {"cx": nx, "cy": ny, "rx": rx, "ry": ry}
        side = rng.choice([-1.0, 1.0])
        ra = rng.uniform(1.5, 4.0) * mm
        ax_ = nx + side * (rx + ra + rng.uniform(0.5, 4.0) * mm)
        ay_ = ny + rng.uniform(-0.6, 0.6) * ry
        fixed = [(ax_, ay_, ra, ra * rng.uniform(0.85, 1.0), 0.0)]
        info["artery"] = {"cx": ax_, "cy": ay_, "r": ra}
        if rng.random() < 0.6:         # a vein beside the artery: oval, flattened by the probe
            va = rng.uniform(2.0, 5.0) * mm
            vx = ax_ + side * (ra + va + rng.uniform(0.3, 2.0) * mm)
            fixed.append((vx, ay_ + rng.uniform(-1.0, 1.0) * mm, va, va * rng.uniform(0.3, 0.7), rng.uniform(-10, 10)))
        fluid_kw = {"fixed": fixed, "avoid": [(nx - rx - mm, nx + rx + mm, ny - ry - mm, ny + ry + mm)]}
        tx, ty = nx + rng.uniform(-1.0, 1.0) * rx, ny + rng.uniform(-1.3, 1.3) * ry
    elif bone is not None:
        ty = min(ty, float(bone[2][int(np.clip(tx, 0, Wc - 1))]) - 4 * mm)
    if bone is not None:                # no vessel in the bone's shadow
        fluid_kw.setdefault("avoid", []).append((bone[0], bone[1], float(bone[2][int(bone[0]):int(bone[1]) + 1].min()),
                                                 float(Hc)))
    # skin and fat: the breast's fine texture, along the layers, on their rows only (the bellies have their own,
    # drawn along the fibres in _bellies; the bands and the nerve their own lowfreq texture)
    ycut = int(min(float(np.max(b_fat)) + 2 * mm, Hc))
    if ycut > 8:
        top_rows = echo[:ycut]
        keep = top_rows.copy()
        _fine_texture(rng, (ycut, Wc), mm, top_rows, ang_c=0.0, ang_w=20.0, strength=0.5, mottle=0.7)
        m = mus[:ycut]
        top_rows *= 1 - m
        top_rows += keep * m
    echo, spec, ref = _finish(rng, fcfg, shape, mm, echo, lines, thin, b_skin, margin, depth_px, sp, atten_db_mm,
                              **fluid_kw)
    return Anatomy(echo=echo, spec=spec, lesion=None, target=(float(tx), float(ty)), ref=ref, info=info)


def muscle(rng, cfg, shape, sp: float, margin: int, depth_px: float, atten_db_mm: float = 0.14) -> Anatomy:
    """Skeletal muscle (module docstring); the needle aims into a belly."""
    return _scene("muscle", rng, cfg, shape, sp, margin, depth_px, atten_db_mm)


def nerve(rng, cfg, shape, sp: float, margin: int, depth_px: float, atten_db_mm: float = 0.14) -> Anatomy:
    """A nerve-block view (module docstring); the needle aims at the nerve's edge."""
    return _scene("nerve", rng, cfg, shape, sp, margin, depth_px, atten_db_mm)
