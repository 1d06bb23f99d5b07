"""Ultrasound-specific clip augmentation.

A model trained here is checked on real footage from scanners it never saw, so the augmentation aims at
the ways scanners differ: overall gain and contrast, display gamma, depth gain (TGC), lateral/axial blur
and resolution, speckle statistics, electronic noise, JPEG/video compression, black screen borders,
sector (fan) masks of convex/phased probes, and burned-in text, calipers and depth scales.

Geometry (flip, affine, resolution, borders, sector) is drawn ONCE per clip and applied identically to
every frame and its mask, so the clip stays a coherent video and masks stay aligned with frames. Noise is
drawn per frame (it is independent frame to frame on a real scanner); intensity settings are per clip with
a small per-frame flicker.

``augment_clip(frames, masks, rng, cfg)`` takes ``T×H×W`` uint8 frames and ``T×H×W`` bool masks and returns
new arrays of the same shape. Everything is NumPy/OpenCV so it runs in DataLoader workers.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np


@dataclass
class AugmentConfig:
    """Probabilities (p_*) and ranges of each augmentation. ``AugmentConfig.off()`` disables all."""

    p_flip: float = 0.5
    p_affine: float = 0.5
    rotate_deg: float = 10.0
    scale: tuple = (0.85, 1.15)
    translate: float = 0.08          # fraction of the image side
    shear_deg: float = 4.0
    p_resolution: float = 0.3
    resolution: tuple = (0.35, 0.8)  # down-sampling factor before up-sampling back
    p_blur: float = 0.3
    blur_sigma: tuple = (0.3, 1.5)   # px at the training size; drawn separately for x and y
    p_speckle: float = 0.4
    speckle: tuple = (0.05, 0.35)    # strength of multiplicative, spatially correlated noise
    p_gain: float = 0.8
    gain: tuple = (0.6, 1.5)
    p_contrast: float = 0.6
    contrast: tuple = (0.65, 1.45)
    p_gamma: float = 0.6
    gamma: tuple = (0.6, 1.6)
    p_tgc: float = 0.3
    tgc: tuple = (0.7, 1.3)          # gain at the bottom relative to the top
    flicker: float = 0.03            # per-frame gain jitter (relative)
    p_noise: float = 0.3
    noise_std: tuple = (1.0, 8.0)    # additive Gaussian noise, grey levels
    p_border: float = 0.25
    border_scale: tuple = (0.7, 0.95)  # image content shrunk into a black screen
    p_sector: float = 0.2
    sector_angle_deg: tuple = (50.0, 90.0)
    p_overlay: float = 0.3
    p_jpeg: float = 0.2
    jpeg_quality: tuple = (30, 85)

    @classmethod
    def off(cls) -> "AugmentConfig":
        return cls(**{f.name: 0.0 for f in fields(cls) if f.name.startswith("p_")}, flicker=0.0)

    @classmethod
    def from_dict(cls, d: dict | None) -> "AugmentConfig":
        d = dict(d or {})
        if d.pop("enabled", True) is False:
            return cls.off()
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown augmentation option(s): {', '.join(unknown)}")
        out = cls()
        for k, v in d.items():
            setattr(out, k, tuple(v) if isinstance(v, list) else v)
        return out

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def _u(rng: np.random.Generator, lohi) -> float:
    lo, hi = lohi
    return float(rng.uniform(lo, hi))


def _affine_matrix(rng, h, w, cfg: AugmentConfig, flip: bool) -> np.ndarray | None:
    m = np.eye(3, dtype=np.float64)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    if flip:
        m = np.array([[-1, 0, w - 1], [0, 1, 0], [0, 0, 1]], dtype=np.float64) @ m
    if rng.random() < cfg.p_affine:
        ang = math.radians(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
        s = _u(rng, cfg.scale)
        sh = math.tan(math.radians(rng.uniform(-cfg.shear_deg, cfg.shear_deg)))
        tx, ty = rng.uniform(-cfg.translate, cfg.translate, size=2) * (w, h)
        c, si = math.cos(ang), math.sin(ang)
        core = np.array([[c, -si], [si, c]]) @ np.array([[1, sh], [0, 1]]) * s
        a = np.eye(3)
        a[:2, :2] = core
        a[:2, 2] = [cx + tx - core[0, 0] * cx - core[0, 1] * cy, cy + ty - core[1, 0] * cx - core[1, 1] * cy]
        m = a @ m
    if np.allclose(m, np.eye(3)):
        return None
    return m[:2]


def _warp_clip(frames: np.ndarray, masks: np.ndarray, m: np.ndarray):
    t, h, w = frames.shape
    out_f = np.empty_like(frames)
    out_m = np.empty_like(masks)
    for i in range(t):
        out_f[i] = cv2.warpAffine(frames[i], m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=0)
        mm = cv2.warpAffine(masks[i].astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out_m[i] = mm >= 0.5
    return out_f, out_m


def _sector_mask(rng, h, w, cfg: AugmentConfig) -> np.ndarray:
    """A fan-shaped field of view (convex/phased probe display) as an H×W bool."""
    half = math.radians(_u(rng, cfg.sector_angle_deg)) / 2
    apex_y = -rng.uniform(0.05, 0.6) * h
    apex_x = (w - 1) / 2 + rng.uniform(-0.05, 0.05) * w
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - apex_x, yy - apex_y
    r = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dx, dy)
    r_min = -apex_y + rng.uniform(0.0, 0.08) * h
    r_max = r_min + rng.uniform(0.85, 1.1) * (h - r_min if r_min < h else h)
    sec = (np.abs(theta) <= half) & (r >= r_min) & (r <= r_max)
    return sec


_TEXTS = ("L12-5", "C5-2", "GEN", "RES", "PEN", "THI", "MI 0.9", "TIS 0.4", "FR 25", "D 4.0cm", "G 52",
          "DR 60", "B", "2D", "LEFT", "RIGHT", "BIOPSY", "NERVE", "cm", "Hz", "dB", "P", "+", "x")


def _overlay(rng, h, w) -> tuple[np.ndarray, np.ndarray]:
    """Burned-in screen graphics: returns (mask of overlay pixels, their grey values) as H×W arrays."""
    canvas = np.zeros((h, w), np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max(0.25, min(h, w) / 500.0) * rng.uniform(0.7, 1.4)
    thick = 1
    n_text = int(rng.integers(1, 5))
    for _ in range(n_text):
        text = str(rng.choice(_TEXTS))
        if rng.random() < 0.5:
            text += f" {rng.uniform(0, 99):.1f}"
        x = int(rng.integers(0, max(1, w - 20)))
        y = int(rng.integers(8, max(9, h)))
        cv2.putText(canvas, text, (x, y), font, scale, int(rng.integers(120, 256)), thick, cv2.LINE_AA)
    # calipers: small '+' or 'x' markers, optionally joined by a dotted line
    if rng.random() < 0.6:
        pts = rng.uniform(0.1, 0.9, size=(2, 2)) * (w, h)
        size = max(2, int(min(h, w) * rng.uniform(0.015, 0.03)))
        val = int(rng.integers(150, 256))
        for px, py in pts.astype(int):
            if rng.random() < 0.5:
                cv2.line(canvas, (px - size, py), (px + size, py), val, 1)
                cv2.line(canvas, (px, py - size), (px, py + size), val, 1)
            else:
                cv2.line(canvas, (px - size, py - size), (px + size, py + size), val, 1)
                cv2.line(canvas, (px - size, py + size), (px + size, py - size), val, 1)
        if rng.random() < 0.5:
            (x0, y0), (x1, y1) = pts
            n = int(np.hypot(x1 - x0, y1 - y0) // 6)
            for k in range(n):
                if k % 2 == 0:
                    fx, fy = x0 + (x1 - x0) * k / max(n, 1), y0 + (y1 - y0) * k / max(n, 1)
                    canvas[int(np.clip(fy, 0, h - 1)), int(np.clip(fx, 0, w - 1))] = val
    # depth scale: ticks along the left or right edge
    if rng.random() < 0.5:
        x = 2 if rng.random() < 0.5 else w - 6
        step = max(4, int(h * rng.uniform(0.05, 0.12)))
        val = int(rng.integers(120, 230))
        for y in range(step, h, step):
            cv2.line(canvas, (x, y), (x + 3, y), val, 1)
    return canvas > 0, canvas.astype(np.float32)


def _speckle_field(rng, h, w, strength: float) -> np.ndarray:
    """Multiplicative noise with mean 1: Rayleigh-distributed and slightly spatially correlated."""
    n = rng.rayleigh(scale=1.0, size=(h, w)).astype(np.float32)
    n /= math.sqrt(math.pi / 2)  # mean of Rayleigh(1)
    corr = float(rng.uniform(0.0, 1.2))
    if corr > 0.3:
        n = cv2.GaussianBlur(n, (0, 0), sigmaX=corr * rng.uniform(1.0, 2.0), sigmaY=corr)
        n = n / max(float(n.mean()), 1e-6)
    return 1.0 + strength * (n - 1.0)


def augment_clip(frames: np.ndarray, masks: np.ndarray, rng: np.random.Generator,
                 cfg: AugmentConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Augment one clip. ``frames``: T×H×W uint8, ``masks``: T×H×W bool. Returns new arrays, same shapes."""
    cfg = cfg or AugmentConfig()
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    masks = np.ascontiguousarray(masks, dtype=bool)
    if frames.ndim != 3 or frames.shape != masks.shape:
        raise ValueError(f"expected T×H×W frames and masks of equal shape, got {frames.shape} and {masks.shape}")
    t, h, w = frames.shape

    # --- geometry, one draw per clip ---------------------------------------------------------------
    flip = rng.random() < cfg.p_flip
    m = _affine_matrix(rng, h, w, cfg, flip)
    if m is not None:
        frames, masks = _warp_clip(frames, masks, m)

    if rng.random() < cfg.p_border:  # content shrunk into a black screen area
        s = _u(rng, cfg.border_scale)
        nh, nw = max(8, int(round(h * s * rng.uniform(0.95, 1.05)))), max(8, int(round(w * s)))
        nh, nw = min(nh, h), min(nw, w)
        y0, x0 = int(rng.integers(0, h - nh + 1)), int(rng.integers(0, w - nw + 1))
        f2 = np.zeros_like(frames)
        m2 = np.zeros_like(masks)
        for i in range(t):
            f2[i, y0:y0 + nh, x0:x0 + nw] = cv2.resize(frames[i], (nw, nh), interpolation=cv2.INTER_AREA)
            m2[i, y0:y0 + nh, x0:x0 + nw] = cv2.resize(masks[i].astype(np.float32), (nw, nh),
                                                       interpolation=cv2.INTER_LINEAR) >= 0.5
        frames, masks = f2, m2

    res = None
    if rng.random() < cfg.p_resolution:
        r = _u(rng, cfg.resolution)
        res = (max(4, int(round(w * r * rng.uniform(0.85, 1.15)))), max(4, int(round(h * r))))
    blur = (_u(rng, cfg.blur_sigma), _u(rng, cfg.blur_sigma)) if rng.random() < cfg.p_blur else None

    # --- intensity settings, one draw per clip -----------------------------------------------------
    gain = _u(rng, cfg.gain) if rng.random() < cfg.p_gain else 1.0
    contrast = _u(rng, cfg.contrast) if rng.random() < cfg.p_contrast else 1.0
    gamma = _u(rng, cfg.gamma) if rng.random() < cfg.p_gamma else 1.0
    tgc = None
    if rng.random() < cfg.p_tgc:
        bottom = _u(rng, cfg.tgc)
        mid = rng.uniform(min(1.0, bottom), max(1.0, bottom))
        ys = np.linspace(0, 1, h, dtype=np.float32)
        tgc = np.interp(ys, [0, 0.5, 1], [1.0, mid, bottom]).astype(np.float32)[:, None]
    speckle = _u(rng, cfg.speckle) if rng.random() < cfg.p_speckle else 0.0
    noise = _u(rng, cfg.noise_std) if rng.random() < cfg.p_noise else 0.0
    jpeg = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)) if rng.random() < cfg.p_jpeg else None
    sector = _sector_mask(rng, h, w, cfg) if rng.random() < cfg.p_sector else None
    overlay = _overlay(rng, h, w) if rng.random() < cfg.p_overlay else None

    out = np.empty((t, h, w), np.uint8)
    for i in range(t):
        f = frames[i]
        if res is not None:
            f = cv2.resize(cv2.resize(f, res, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR)
        x = f.astype(np.float32)
        if blur is not None:
            x = cv2.GaussianBlur(x, (0, 0), sigmaX=blur[0], sigmaY=blur[1])
        if speckle > 0:
            x = x * _speckle_field(rng, h, w, speckle)
        g = gain * (1.0 + rng.uniform(-cfg.flicker, cfg.flicker)) if cfg.flicker > 0 else gain
        x = x * g
        if tgc is not None:
            x = x * tgc
        if contrast != 1.0:
            mean = float(x.mean())
            x = (x - mean) * contrast + mean
        x = np.clip(x, 0, 255)
        if gamma != 1.0:
            x = 255.0 * (x / 255.0) ** gamma
        if noise > 0:
            x = x + rng.normal(0.0, noise, size=x.shape).astype(np.float32)
        if sector is not None:
            x = np.where(sector, x, 0.0)
        if overlay is not None:
            x = np.where(overlay[0], overlay[1], x)
        f = np.clip(x + 0.5, 0, 255).astype(np.uint8)
        if jpeg is not None:
            ok, buf = cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, jpeg])
            if ok:
                f = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        out[i] = f
    if sector is not None:  # the needle cannot be seen outside the field of view
        masks = masks & sector[None]
    return out, masks
