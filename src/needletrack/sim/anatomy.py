"""Procedural breast anatomy as an echogenicity map on the beam-coordinate canvas.

Layers from the probe down: optional gel stand-off, skin (bright entry echo, dermis), subcutaneous
fat with lobules, Cooper's ligaments (bright curved lines: needle-like distractors), fibroglandular
tissue (bright, mottled, with fat islands), retromammary fat, pectoral fascia and muscle (striated),
sometimes a rib (bright arc, full shadow). A hypoechoic irregular lesion is the biopsy target, with
posterior shadowing or enhancement. Extra straight bright lines (fascia, old tracks) are optional
hard negatives.

Intensities are linear echo power relative to glandular tissue (= 1). Returned maps:
``echo`` (speckled, multiplies the scatterer power) and ``spec`` (specular, added without speckle).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from needletrack.sim.fluid import add_fluid
from needletrack.sim.maps import _blur, flow_lowfreq, lowfreq, oriented_lowfreq
from needletrack.sim.motion import smooth_noise


def _u(rng, r) -> float:
    lo, hi = float(r[0]), float(r[1])
    return lo if hi <= lo else float(rng.uniform(lo, hi))


def _ui(rng, r) -> int:
    return int(rng.integers(int(r[0]), int(r[1]) + 1))


def _curve(rng, n, base, amp, knot_px):
    return base + smooth_noise(rng, n, 1.0, knot_px, amp)


def _interface(rng, shape, ys, amp: float, th: int, mm: float, gaps: float = 0.3) -> np.ndarray:
    """A tissue interface along ``ys`` (one depth per canvas column) drawn in pieces: its echo varies along it
    (log-normal, a few mm correlation, where it faces the beam and where it does not) and fades out in gaps
    (``gaps``: about that share of its length missing), so that it is not an even line across the image."""
    Wc = len(ys)
    out = np.zeros(shape, np.float32)
    step = max(int(round(0.5 * mm)), 2)
    xs = np.arange(0, Wc + step, step)
    xs[-1] = min(xs[-1], Wc - 1)
    n = len(xs)
    knot = max(rng.uniform(3.0, 8.0) * mm / step, 2.0)
    lvl = np.exp(0.8 * smooth_noise(rng, n, 1.0, knot, 1.0))
    on = np.clip((smooth_noise(rng, n, 1.0, knot, 1.0) - (2 * gaps - 1)) * 2.0, 0.0, 1.0)
    a = amp * lvl * on
    y = np.asarray(ys, np.float64)[np.clip(xs, 0, Wc - 1)]
    for k in range(n - 1):
        if a[k] > 1e-3:
            cv2.line(out, (int(xs[k]), int(round(y[k]))), (int(xs[k + 1]), int(round(y[k + 1]))), float(a[k]), th,
                     cv2.LINE_AA)
    return out


@dataclass
class Anatomy:
    echo: np.ndarray          # Hc x Wc float32
    spec: np.ndarray          # Hc x Wc float32
    lesion: np.ndarray | None  # Hc x Wc bool (target) or None
    target: tuple             # (cx, cy) canvas px of the biopsy target
    ref: float                # typical tissue echo power (for needle calibration)
    info: dict = field(default_factory=dict)   # what the scene drew (kind, layer angles, bone, nerve, artery)


def _bezier(p0, p1, p2, n=24):
    t = np.linspace(0, 1, n)[:, None]
    return ((1 - t) ** 2) * p0 + 2 * (1 - t) * t * p1 + (t ** 2) * p2


def _fine_texture(rng, shape, mm: float, echo: np.ndarray, ang_c: float = 0.0, ang_w: float = 45.0,
                  strength: float = 1.0, mottle: float = 1.0, flow_bend_mm: float = 0.8) -> None:
    """Sub-resolution tissue structure and sparse bright echoes, multiplied into ``echo`` in place. The strands'
    orientations are drawn from ``ang_c`` +- ``ang_w`` degrees (the breast: 0 +- 45); ``strength`` scales the
    sparse bright echoes, ``mottle`` the log-amplitude of the strand fields; ``flow_bend_mm`` bends the finest
    strands' flow (``maps.flow_lowfreq``)."""
    # tissue structure below the resolution of the anatomy above: echogenic strands (fibrous septa, fascicles)
    # over a darker matrix, elongated 2-4x along the local layering, tilted by up to 45 degrees (septa run
    # obliquely; up to 25 left the texture too horizontal against the real train split); log-normal, so a few
    # bright strands and much dark tissue (positively skewed grey levels)
    # the finest strands follow a wavy flow (v3): a line-integral-like texture along streamlines at a random
    # mean angle, bent by up to ~2 mm over 4-8 mm, so that they stay continuous over ~1 mm along curving paths
    # instead of all lying at one angle (train yardstick, full: easy/clinical/hard 0.783/0.759/0.811 -> 0.765/0.750/0.799)
    Hc, Wc = shape
    t = math.radians(rng.uniform(ang_c - ang_w, ang_c + ang_w))
    ys = np.arange(Hc, dtype=np.float32)[:, None]
    xs = np.arange(Wc, dtype=np.float32)[None, :]
    bend = lowfreq(rng, shape, 8.0 * mm, 16.0 * mm) * np.float32(flow_bend_mm * mm)   # gentle: no whorls
    fu = xs * np.float32(math.cos(t)) + ys * np.float32(math.sin(t))
    fv = -xs * np.float32(math.sin(t)) + ys * np.float32(math.cos(t)) + bend
    for j, (cy_mm, cx_mm, amp) in enumerate(((rng.uniform(0.15, 0.3), rng.uniform(0.5, 1.2), rng.uniform(0.5, 0.8)),
                                             (rng.uniform(0.8, 2.0), rng.uniform(2.0, 5.0), rng.uniform(0.6, 1.0)))):
        if j == 0:
            g = flow_lowfreq(rng, fu, fv, cx_mm * mm, cy_mm * mm)
        else:
            g = oriented_lowfreq(rng, shape, cy_mm * mm, cx_mm * mm, rng.uniform(ang_c - ang_w, ang_c + ang_w))
        amp = amp * mottle
        g *= np.float32(amp)
        echo *= np.exp(g - np.float32(0.5 * amp * amp))
    # sparse bright echoes: short thin strands (ridges of an anisotropic random field) 5-15 dB above the
    # tissue, in two orientation families: the bright tail of every real frame's grey histogram
    for _ in range(2):
        w2 = 35.0 * ang_w / 45.0
        g = oriented_lowfreq(rng, shape, rng.uniform(0.15, 0.3) * mm, rng.uniform(1.0, 4.0) * mm,
                             rng.uniform(ang_c - w2, ang_c + w2))
        thr = np.float32(rng.uniform(1.2, 1.7))
        st = np.maximum(g - thr, 0)
        st *= np.clip(lowfreq(rng, shape, 6 * mm, 10 * mm) - np.float32(rng.uniform(-0.3, 0.6)), 0, 1)   # in clusters
        echo += np.float32(strength * rng.uniform(20.0, 60.0)) * st * st * echo


def _finish(rng, cfg, shape, mm: float, echo, lines, thin, b_skin, margin: int, depth_px: float, sp: float,
            atten_db_mm: float, **fluid_kw):
    """The steps every tissue scene ends with: fluid (``add_fluid``; ``fluid_kw`` passed on), reverberation
    streaks, shadowing below strong reflectors, rough specular lines, and the split into speckled ``echo`` and
    unspeckled ``spec``. Returns ``(echo, spec, ref)``."""
    Hc, Wc = shape
    add_fluid(rng, cfg, shape, echo, lines, thin, b_skin, margin, depth_px, sp, atten_db_mm, **fluid_kw)
    # vertical reverberation streaks: a strong near-field reflector (skin/gel interface, a calcification, a thin
    # fascia) rings between itself and the probe; below it a narrow vertical streak of repeats, fading with depth
    for _ in range(_ui(rng, getattr(cfg, "reverb_streaks", (0, 1)))):
        x_ = rng.uniform(0.05, 0.95) * Wc
        i = int(np.clip(x_, 0, Wc - 1))
        z0 = float(b_skin[i] + rng.uniform(0.0, 6.0) * mm)
        gap = rng.uniform(0.4, 1.2) * mm
        fade = rng.uniform(3.0, 12.0) * mm
        wdt = rng.uniform(0.4, 1.2) * mm
        st = np.zeros(shape, np.float32)
        a0 = float(rng.uniform(1.0, 4.0))
        z = z0
        while z < Hc and (z - z0) < 4 * fade:
            cv2.line(st, (int(x_ - wdt / 2), int(z)), (int(x_ + wdt / 2), int(z)), a0 * math.exp(-(z - z0) / fade),
                     max(1, int(round(0.2 * mm))), cv2.LINE_AA)
            z += gap
        thin += st
    lines += cv2.GaussianBlur(thin, (0, 0), max(0.15 * mm, 0.6))
    # shadowing: a strong specular reflector passes on less energy; everything below it along the beam is darker
    # (transmission through each reflector, accumulated over depth; ribs and calcifications block almost all)
    refl = np.clip(_blur(lines, max(0.6 * mm, 1.0)), 0, None)
    trans = np.exp(-np.float32(getattr(cfg, "reflector_loss", 0.04) / max(mm, 1.0)) * np.cumsum(refl, axis=0))
    echo *= trans
    lines *= np.sqrt(trans)
    # specular interfaces are rough: their echo varies along them (texture, partial facing of the beam)
    lines *= np.exp(0.7 * oriented_lowfreq(rng, shape, 0.5 * mm, 1.5 * mm, 0.0) - 0.245)
    k = rng.uniform(0.1, 0.35)                      # share of line power that is specular (unspeckled)
    echo += (1 - k) * lines
    spec = k * lines
    ref = float(np.median(echo[margin:margin + int(depth_px)]))
    return echo, spec, max(ref, 1e-3)


def breast(rng, cfg, shape, sp: float, margin: int, depth_px: float, atten_db_mm: float = 0.14) -> Anatomy:
    """``atten_db_mm``: two-way tissue attenuation at the centre frequency (dB per mm of depth): what an anechoic
    region does not attenuate shows as posterior enhancement below it."""
    Hc, Wc = shape
    mm = 1.0 / sp                                  # px per mm
    rows = np.arange(Hc, dtype=np.float32)[:, None]
    echo = np.zeros(shape, np.float32)
    spec = np.zeros(shape, np.float32)
    lines = np.zeros(shape, np.float32)            # thin bright reflectors, split between echo and spec

    # gel or water stand-off: an anechoic layer between the probe face and the skin (thick pad or a thin film)
    if rng.random() < getattr(cfg, "standoff_prob", 0.0):
        top = margin + _u(rng, getattr(cfg, "standoff_mm", (2.0, 8.0))) * mm
    else:
        top = margin + (rng.uniform(0.0, 1.2) * mm if rng.random() < 0.3 else 0.0)
    skin = _u(rng, cfg.skin_mm) * mm
    fat_t = _u(rng, cfg.fat_frac) * depth_px
    gland_t = _u(rng, cfg.gland_frac) * depth_px
    b_skin = _curve(rng, Wc, top + skin, 0.3 * mm, 40 * mm)
    # the layer boundaries undulate (1-3 mm over 5-15 mm): flat ones drew even lines across the whole image
    b_fat = _curve(rng, Wc, top + skin + fat_t, rng.uniform(1.0, 3.0) * mm, rng.uniform(5, 15) * mm)
    b_gland = _curve(rng, Wc, top + skin + fat_t + gland_t, rng.uniform(1.0, 3.0) * mm, rng.uniform(5, 15) * mm)
    b_gland = np.maximum(b_gland, b_fat + 2 * mm)
    retro = rng.uniform(1.0, 4.0) * mm
    muscle = rng.random() < cfg.muscle_prob
    # the pectoral fascia is smoother than the gland's deep surface above it (a 10 mm running mean of it)
    kf = max(int(10 * mm) | 1, 3)
    b_fascia = np.convolve(np.pad(b_gland, kf // 2, mode="edge"), np.ones(kf) / kf, mode="valid")[:Wc] + retro
    if not muscle:
        b_fascia = b_fascia + 10 * depth_px            # below the image

    fat_lvl = rng.uniform(0.06, 0.16)
    gland_lvl = rng.uniform(0.7, 1.3)
    dermis_lvl = rng.uniform(0.3, 0.7)
    muscle_lvl = rng.uniform(0.12, 0.3)

    echo[:] = fat_lvl
    in_gland = (rows >= b_fat[None, :]) & (rows < b_gland[None, :])
    tex = np.exp(0.55 * lowfreq(rng, shape, rng.uniform(1.0, 3.0) * mm, rng.uniform(3.0, 8.0) * mm))
    echo[in_gland] = gland_lvl
    echo *= tex
    # fat islands inside the gland, and lobules in the subcutaneous fat
    isl = lowfreq(rng, shape, rng.uniform(1.5, 3.0) * mm, rng.uniform(3.0, 7.0) * mm)
    fat_isl = in_gland & (isl > rng.uniform(0.6, 1.2))
    # soft-edged (0.5 mm): cut out of the gland with hard edges they read as holes punched in the texture
    wsoft = _blur(fat_isl.astype(np.float32), max(0.5 * mm, 1.0))
    echo *= 1 - wsoft
    echo += np.float32(fat_lvl * rng.uniform(0.8, 1.4)) * wsoft
    fat_zone = (rows >= b_skin[None, :]) & (rows < b_fat[None, :])
    n_lob = int(Wc / (rng.uniform(5, 12) * mm) * max(fat_t / (8 * mm), 1)) + 2
    for _ in range(n_lob):
        cx = rng.uniform(0, Wc)
        i = int(np.clip(cx, 0, Wc - 1))
        cy = rng.uniform(b_skin[i], max(b_fat[i], b_skin[i] + 1))
        ax = rng.uniform(2.5, 7.0) * mm
        ay = ax * rng.uniform(0.35, 0.7)
        ang = rng.uniform(-20, 20)
        a0 = rng.uniform(0, 360)
        cv2.ellipse(lines, (int(cx), int(cy)), (int(ax), int(ay)), ang, a0, a0 + rng.uniform(90, 300),
                    float(rng.uniform(0.05, 0.3)), max(1, int(round(0.12 * mm))), cv2.LINE_AA)
    lines *= fat_zone
    echo[fat_zone] *= 1.0   # keep the lobule interiors at fat level
    # dermis and skin entry echo
    in_dermis = (rows >= top) & (rows < b_skin[None, :])
    echo[in_dermis] = dermis_lvl
    echo[rows[:, 0] < top] = 0.003
    sk = np.zeros(shape, np.float32)
    pts = np.stack([np.arange(Wc), np.full(Wc, top + 0.3 * mm)], 1).astype(np.int32)
    cv2.polylines(sk, [pts], False, float(rng.uniform(2.0, 6.0)), max(1, int(round(0.3 * mm))), cv2.LINE_AA)
    lines += sk
    # skin reverberation (faint horizontal repeats near the top)
    # (the probe-skin round trip repeats at multiples of the skin's depth; broken and uneven like the contact)
    if rng.random() < 0.4:
        d0 = top + 0.3 * mm - margin
        for k in range(1, 3):
            z = margin + (k + 1) * max(d0, 0.8 * mm)
            lines += _interface(rng, shape, np.full(Wc, z), float(0.3 / k), 1, mm, gaps=0.5)
    thin = np.zeros(shape, np.float32)             # drawn bands, softened once (ligaments, interfaces, streaks)
    # Cooper's ligaments: a few bright curved bands from the gland surface up towards the skin, thick (0.3-0.8 mm),
    # broken into clumps along their length (specular only where the band faces the beam)
    for _ in range(_ui(rng, cfg.ligaments)):
        x = rng.uniform(0, Wc)
        i = int(np.clip(x, 0, Wc - 1))
        p0 = np.array([x, b_fat[i] + rng.uniform(-1, 2) * mm])
        rise = rng.uniform(0.3, 0.9) * max(b_fat[i] - b_skin[i], 2 * mm)
        run = rng.uniform(0.8, 2.5) * rise * rng.choice([-1.0, 1.0])
        p2 = np.array([x + run, p0[1] - rise])
        p1 = (p0 + p2) / 2 + np.array([rng.uniform(-0.3, 0.3) * rise, rng.uniform(-0.3, 0.3) * rise])
        c = _bezier(p0, p1, p2, 40)
        seg = np.zeros(shape, np.float32)
        bright = float(rng.uniform(1.5, 5.0))
        th = max(1, int(round(rng.uniform(0.3, 0.8) * mm)))
        on = smooth_noise(rng, len(c) - 1, 1.0, rng.uniform(3, 8), 1.0) > rng.uniform(-0.5, 0.2)
        for k in range(len(c) - 1):
            if on[k]:
                t = c[k + 1] - c[k]
                # specular: brightest where the band lies across the beam
                f = abs(t[0]) / max(math.hypot(t[0], t[1]), 1e-6)
                cv2.line(seg, tuple(c[k].astype(int)), tuple(c[k + 1].astype(int)), bright * (0.25 + 0.75 * f * f), th,
                         cv2.LINE_AA)
        thin += seg
    # layered interfaces: short bright wavy segments roughly along the layers (connective tissue planes)
    for _ in range(_ui(rng, (2, 6))):
        L = rng.uniform(4, 15) * mm
        x0 = rng.uniform(-0.2, 1.0) * Wc
        y0 = margin + rng.uniform(0.05, 0.9) * depth_px
        n = max(int(L / max(mm, 1)), 4)
        xs = x0 + np.linspace(0, L, n)
        ys = y0 + (xs - x0) * math.tan(math.radians(rng.uniform(-12, 12))) + smooth_noise(rng, n, 1.0, max(n / 6, 2), 0.8 * mm)
        taper = np.sin(np.linspace(0, math.pi, n)) ** 0.5
        amp = np.clip(0.5 + smooth_noise(rng, n, 1.0, max(n / 8, 2), 0.7), 0.0, None) * taper * rng.uniform(0.8, 3.0)
        seg = np.zeros(shape, np.float32)
        th = max(1, int(round(rng.uniform(0.2, 0.6) * mm)))
        for k in range(n - 1):
            cv2.line(seg, (int(xs[k]), int(ys[k])), (int(xs[k + 1]), int(ys[k + 1])), float(amp[k]), th, cv2.LINE_AA)
        thin += seg
    # gland surface echo (anterior mammary fascia), partial
    lines += _interface(rng, shape, b_fat, float(rng.uniform(0.5, 2.0)), max(1, int(round(0.2 * mm))), mm, gaps=0.5)
    # muscle and pectoral fascia
    if muscle:
        in_muscle = rows >= b_fascia[None, :]
        echo[in_muscle] = muscle_lvl
        stri = np.zeros(shape, np.float32)
        ang = math.radians(rng.uniform(-25, 25))
        gap = rng.uniform(1.2, 3.0) * mm
        n = int((Hc + Wc) / gap) + 2
        for k in range(-n, n):
            y0 = k * gap
            p = np.array([[0, y0], [Wc, y0 + Wc * math.tan(ang)]], np.float64)
            p[:, 1] += rng.uniform(-0.3, 0.3) * gap
            cv2.line(stri, tuple(p[0].astype(int)), tuple(p[1].astype(int)), float(rng.uniform(0.2, 1.2)),
                     max(1, int(round(rng.uniform(0.1, 0.3) * mm))), cv2.LINE_AA)
        stri = cv2.GaussianBlur(stri, (0, 0), max(0.15 * mm, 0.6))
        stri *= np.clip(1 + oriented_lowfreq(rng, shape, 1.0 * mm, 4.0 * mm, math.degrees(ang)), 0, None)
        echo += stri * in_muscle * muscle_lvl * 3
        lines += _interface(rng, shape, b_fascia, float(rng.uniform(1.5, 5.0)), max(1, int(round(0.4 * mm))), mm,
                            gaps=0.15)
        # rib: bright curved surface and a complete shadow
        if rng.random() < 0.2 and depth_px * sp > 30:
            cx = rng.uniform(0.2, 0.8) * Wc
            cy = b_fascia[int(cx)] + rng.uniform(4, 10) * mm
            ax, ay = rng.uniform(4, 8) * mm, rng.uniform(2, 4) * mm
            rib = np.zeros(shape, np.uint8)
            cv2.ellipse(rib, (int(cx), int(cy)), (int(ax), int(ay)), 0, 0, 360, 1, -1)
            below = _blur(np.maximum.accumulate(rib, axis=0).astype(np.float32), 1.0 * mm)
            echo *= 1 - 0.95 * below
            cv2.ellipse(lines, (int(cx), int(cy)), (int(ax), int(ay)), 0, 180, 360, float(rng.uniform(4, 10)),
                        max(1, int(round(0.5 * mm))), cv2.LINE_AA)
    # straight bright distractors (fascia planes, old needle tracks)
    for _ in range(_ui(rng, cfg.distractor_lines)):
        L = rng.uniform(8, 30) * mm
        a = math.radians(rng.uniform(0, 45)) * rng.choice([-1, 1])
        cx = rng.uniform(0.1, 0.9) * Wc
        cy = margin + rng.uniform(0.15, 0.8) * depth_px
        d = np.array([math.cos(a), math.sin(a)]) * L / 2
        p0 = (int(cx - d[0]), int(cy - d[1]))
        p1 = (int(cx + d[0]), int(cy + d[1]))
        cv2.line(lines, p0, p1, float(rng.uniform(1.0, 5.0)), max(1, int(round(rng.uniform(0.3, 0.8) * mm))), cv2.LINE_AA)
    # lesion (target)
    lesion = None
    tx = rng.uniform(0.3, 0.7) * Wc
    ty = margin + rng.uniform(0.3, 0.7) * depth_px
    if rng.random() < cfg.lesion_prob:
        rad = _u(rng, cfg.lesion_mm) * mm / 2
        malignant = rng.random() < 0.4
        ang = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        r = np.ones_like(ang)
        for k in range(2, 7 if not malignant else 12):
            r += rng.uniform(0, 0.12 if not malignant else 0.08) * np.cos(k * ang + rng.uniform(0, 2 * np.pi))
        if malignant:
            spikes = rng.random(64) < 0.1
            r[spikes] *= rng.uniform(1.05, 1.25, int(spikes.sum()))
            r = np.convolve(np.concatenate([r[-2:], r, r[:2]]), np.ones(3) / 3, mode="same")[2:-2]
        aspect = rng.uniform(0.55, 1.0) if not malignant else rng.uniform(0.8, 1.3)
        ty = max(ty, margin + skin + rad * aspect + 2 * mm)
        pts = np.stack([tx + rad * r * np.cos(ang), ty + rad * aspect * r * np.sin(ang)], 1).astype(np.int32)
        lm = np.zeros(shape, np.uint8)
        cv2.fillPoly(lm, [pts], 1, cv2.LINE_AA)
        lesion = lm.astype(bool)
        soft = _blur(lm.astype(np.float32), max(0.4 * mm, 1.0))
        inner = fat_lvl * rng.uniform(0.03, 0.25) * np.exp(0.5 * lowfreq(rng, shape, 2 * mm, 2 * mm))
        echo = echo * (1 - soft) + inner * soft
        if malignant and rng.random() < 0.5:   # echogenic halo
            cv2.polylines(lines, [pts], True, float(rng.uniform(0.3, 1.0)), max(1, int(round(0.8 * mm))), cv2.LINE_AA)
        post = rng.choice(["shadow", "enhance", "none"], p=[0.4, 0.4, 0.2] if malignant else [0.15, 0.6, 0.25])
        if post != "none":
            below = np.maximum.accumulate(lm, axis=0).astype(np.float32) - lm
            below = _blur(below, max(1.0 * mm, 1.0))
            f = rng.uniform(0.15, 0.5) if post == "shadow" else rng.uniform(1.4, 2.5)
            echo *= 1 + (f - 1) * below
            lines *= 1 + (f - 1) * below
    _fine_texture(rng, shape, mm, echo)
    echo, spec, ref = _finish(rng, cfg, shape, mm, echo, lines, thin, b_skin, margin, depth_px, sp, atten_db_mm)
    return Anatomy(echo=echo, spec=spec, lesion=lesion, target=(float(tx), float(ty)), ref=ref)

