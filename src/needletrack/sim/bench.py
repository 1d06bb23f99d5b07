"""Bench scene: a needle in water or gel over a tissue block, as an echogenicity map on the beam-coordinate canvas
(same maps as ``anatomy.breast``)."""
from __future__ import annotations

import math

import cv2
import numpy as np

from needletrack.sim.anatomy import Anatomy, _u, oriented_lowfreq


def bench(rng, cfg, shape, sp: float, margin: int, depth_px: float, atten_db_mm: float = 0.14) -> Anatomy:
    """Bench scene: water or gel (anechoic, a few floating specks) over a tissue block (a speckle layer with a
    flat, slightly tilted top surface), as bench recordings look. The water does not attenuate: the block is
    brighter than the TGC expects (the two-way attenuation the beam did not suffer)."""
    Hc, Wc = shape
    mm = 1.0 / sp
    rows = np.arange(Hc, dtype=np.float32)[:, None]
    cols = np.arange(Wc, dtype=np.float32)[None, :]
    wf = _u(rng, getattr(cfg, "water_frac", (0.3, 0.6)))
    top0 = margin + wf * depth_px
    tilt = math.tan(math.radians(rng.uniform(-3.0, 3.0)))
    top = top0 + (cols - Wc / 2.0) * np.float32(tilt)                    # flat top surface (1 x Wc)
    inside = np.clip((rows - top) / max(0.3 * mm, 0.7) + 0.5, 0, 1).astype(np.float32)
    # the block: a tissue-mimicking phantom or a meat block, mild texture (chicken/pork: some fibres)
    tex = np.exp(rng.uniform(0.1, 0.4) * oriented_lowfreq(rng, shape, rng.uniform(0.5, 1.5) * mm,
                                                            rng.uniform(1.5, 5.0) * mm, rng.uniform(-10, 10)))
    level = np.float32(rng.uniform(0.7, 1.3))
    echo = (inside * level * tex).astype(np.float32)
    # water/gel: almost anechoic (gel carries a faint scatter), a few floating specks (bubbles, particles)
    echo += (1 - inside) * np.float32(rng.uniform(0.0, 0.004))
    lines = np.zeros(shape, np.float32)
    n_specks = int(rng.integers(3, 16))
    for _ in range(n_specks):
        x_ = rng.uniform(0, Wc)
        y_ = rng.uniform(margin + 1.0 * mm, max(top0 - 1.0 * mm, margin + 1.5 * mm))
        r_ = max(rng.uniform(0.1, 0.35) * mm, 0.6)
        cv2.circle(lines, (int(x_), int(y_)), int(math.ceil(r_)), float(rng.uniform(0.3, 3.0)), -1, cv2.LINE_AA)
    # the top surface: a bright specular line, rough along its length
    surf = np.exp(-0.5 * ((rows - top) / max(0.2 * mm, 0.7)) ** 2).astype(np.float32)
    # the water does not attenuate: the block below is brighter by what the beam did not lose
    water_mm = np.clip(top - margin, 0, None) * np.float32(sp)
    enh = np.power(np.float32(10.0), np.minimum(water_mm * np.float32(atten_db_mm), 8.0) / np.float32(10.0))
    lines += surf * enh * level * np.float32(rng.uniform(3.0, 10.0))
    lines *= np.exp(0.6 * oriented_lowfreq(rng, shape, 0.5 * mm, 1.5 * mm, 0.0) - 0.18)
    echo *= np.where(rows > top, enh, np.float32(1.0)).astype(np.float32)
    # a little transmission loss through the surface
    echo *= np.where(rows > top, np.float32(rng.uniform(0.7, 0.95)), np.float32(1.0))
    k = rng.uniform(0.3, 0.6)
    echo += (1 - k) * lines
    spec = (k * lines).astype(np.float32)
    # the needle aims into the water above the block or just into the block
    tx = rng.uniform(0.35, 0.65) * Wc
    ty = float(top0 + (rng.uniform(-0.5, -0.1) if rng.random() < 0.5 else rng.uniform(0.05, 0.3)) *
               (top0 - margin))
    blk = echo[int(min(top0 + 2 * mm, Hc - 1)):int(margin + depth_px)]
    ref = float(np.median(blk)) if blk.size else 1.0
    return Anatomy(echo=echo.astype(np.float32), spec=spec, lesion=None, target=(float(tx), ty), ref=max(ref, 1e-3))
