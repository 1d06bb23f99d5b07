"""B-mode image formation: probe geometry, scatterer fields convolved with the PSF, attenuation,
TGC, noise and log compression.

The simulation works at baseband (IQ): random complex scatterers weighted by the tissue
echogenicity are convolved with the pulse-echo PSF, whose axial part is the Gaussian envelope of the
Gaussian-modulated pulse (the carrier is removed by demodulation) and whose lateral part is a
Gaussian beam whose width follows the focus. The envelope is ``|IQ|``. A uniform region therefore
gives fully developed speckle with Rayleigh statistics (envelope SNR = mean/std = 1.91).

Fields are precomputed once per sequence on a *canvas* in beam coordinates (lateral position or
beam angle across, depth down) that is larger than the image so the probe can drift; each frame
only resamples them (``cv2.remap``), mixes three independent fields for elevational decorrelation,
and adds the needle, noise and log compression.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

C_MM_US = 1.54  # speed of sound, mm per microsecond
RAYLEIGH_SNR = math.sqrt(math.pi / (4 - math.pi))  # 1.913
LOG_RAYLEIGH_STD_DB = 5.57  # std of 20*log10 of a Rayleigh envelope, in dB


def _u(rng, r) -> float:
    lo, hi = float(r[0]), float(r[1])
    return lo if hi <= lo else float(rng.uniform(lo, hi))


@dataclass
class Probe:
    """Display geometry of one sequence. Pixel coordinates (x right, y down) of the output frame.

    ``world`` coordinates are display pixels at the probe pose of the first frame; the canvas maps
    world pixels to beam coordinates (for a linear probe a shift, for a convex one a polar transform).
    """

    kind: str                 # "linear" | "convex"
    H: int
    W: int
    sp: float                 # mm per pixel (isotropic)
    depth_mm: float
    content: np.ndarray       # H x W bool, where image data is shown
    box: tuple                # (x0, y0, x1, y1) bounding box of the content (inclusive-exclusive)
    canvas_hw: tuple          # (Hc, Wc)
    margin: int
    # linear
    x0: float = 0.0
    y0: float = 0.0
    # convex
    ax: float = 0.0
    ay: float = 0.0
    R: float = 0.0            # px, radius of the probe face
    half_angle: float = 0.0   # radians
    ang_scale: float = 0.0    # canvas px per radian

    def to_canvas(self, wx: np.ndarray, wy: np.ndarray):
        """World pixel coordinates -> canvas coordinates (float32 maps for cv2.remap)."""
        m = self.margin
        if self.kind == "linear":
            return (wx - (self.x0 - m)).astype(np.float32, copy=False), (wy - (self.y0 - m)).astype(np.float32, copy=False)
        dx = wx - self.ax
        dy = wy - self.ay
        r = np.sqrt(dx * dx + dy * dy)
        phi = np.arctan2(dx, dy)
        cx = phi * self.ang_scale + (self.canvas_hw[1] / 2.0)
        cy = r - self.R + m
        return cx.astype(np.float32, copy=False), cy.astype(np.float32, copy=False)

    def depth_px(self, x, y):
        """Depth below the probe face (pixels) of display points."""
        if self.kind == "linear":
            return np.asarray(y, dtype=np.float64) - self.y0
        return np.hypot(np.asarray(x) - self.ax, np.asarray(y) - self.ay) - self.R

    def beam_dir(self, x, y):
        """Unit beam direction (pointing away from the probe) at display points: (bx, by)."""
        if self.kind == "linear":
            x = np.asarray(x, dtype=np.float64)
            return np.zeros_like(x), np.ones_like(x)
        dx = np.asarray(x, dtype=np.float64) - self.ax
        dy = np.asarray(y, dtype=np.float64) - self.ay
        r = np.maximum(np.hypot(dx, dy), 1e-6)
        return dx / r, dy / r


def make_probe(rng: np.random.Generator, cfg, H: int, W: int, margin_mm: float = 4.0) -> Probe:
    depth_mm = _u(rng, cfg.depth_mm)
    bordered = rng.random() < cfg.border_prob
    scale = _u(rng, cfg.content_scale) if bordered else 1.0
    convex = rng.random() < cfg.convex_prob
    yy, xx = np.mgrid[0:H, 0:W]
    if not convex:
        hc = int(round(H * scale))
        sp = depth_mm / hc
        if bordered:
            footprint_mm = rng.uniform(35.0, 50.0)
            wc = int(min(W, round(footprint_mm / sp)))
            x0 = int(round((W - wc) / 2 + rng.uniform(-0.5, 0.5) * (W - wc)))
            y0 = int(round(rng.uniform(0.0, 1.0) * min(H - hc, H * 0.1)))
        else:
            wc, x0, y0 = W, 0, 0
        content = (xx >= x0) & (xx < x0 + wc) & (yy >= y0) & (yy < y0 + hc)
        m = int(math.ceil(margin_mm / sp))
        return Probe("linear", H, W, sp, depth_mm, content, (x0, y0, x0 + wc, y0 + hc), (hc + 2 * m, wc + 2 * m),
                     m, x0=float(x0), y0=float(y0))
    R_mm = _u(rng, cfg.convex_radius_mm)
    beta = math.radians(_u(rng, cfg.convex_half_angle_deg))
    # fan bounding box in mm: width 2(R+D) sin b, height (R+D) - R cos b
    bw_mm = 2 * (R_mm + depth_mm) * math.sin(beta)
    bh_mm = (R_mm + depth_mm) - R_mm * math.cos(beta)
    sp = max(bh_mm / (H * scale), bw_mm / (W * (scale if bordered else 1.0)))
    R = R_mm / sp
    D = depth_mm / sp
    fan_h = bh_mm / sp
    fan_w = bw_mm / sp
    ax = W / 2.0 + (rng.uniform(-0.5, 0.5) * max(W - fan_w, 0) if bordered else 0.0)
    top = rng.uniform(0.0, max(min(H - fan_h, H * 0.08), 0.0)) if bordered else max((H - fan_h) / 2, 0) * 0
    ay = top - R * math.cos(beta)
    dx = xx - ax
    dy = yy - ay
    r = np.hypot(dx, dy)
    phi = np.arctan2(dx, dy)
    content = (r >= R) & (r <= R + D) & (np.abs(phi) <= beta) & (dy > 0)
    m = int(math.ceil(margin_mm / sp))
    ang_scale = R + D / 2.0
    wc_canvas = int(math.ceil(2 * beta * ang_scale)) + 2 * m
    ys, xs = np.nonzero(content)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return Probe("convex", H, W, sp, depth_mm, content, box, (int(math.ceil(D)) + 2 * m, wc_canvas), m,
                 ax=float(ax), ay=float(ay), R=float(R), half_angle=beta, ang_scale=float(ang_scale))


@dataclass
class PSF:
    sigma_ax_px: float
    sigma_lat_focus_px: float
    focus_px: float
    rayleigh_px: float        # depth over which the beam widens by sqrt(2)
    freq_mhz: float
    atten_db_cm_mhz: float = 0.5


def make_psf(rng, cfg, probe: Probe) -> PSF:
    f0 = _u(rng, cfg.freq_mhz)
    alpha = _u(rng, cfg.atten_db_cm_mhz)
    # operators pick a lower frequency for deeper imaging: keep the round-trip loss at full depth
    # within what the TGC can give back (35-60 dB)
    f0 = min(f0, max(rng.uniform(35.0, 60.0) / (alpha * 2 * probe.depth_mm / 10.0), 3.0))
    bw = _u(rng, cfg.frac_bandwidth)
    fnum = _u(rng, cfg.f_number)
    scale = _u(rng, cfg.speckle_scale)
    sigma_f = bw * f0 / (2 * math.sqrt(2 * math.log(2)))      # MHz, amplitude spectrum
    sigma_t = 1.0 / (2 * math.pi * sigma_f)                   # microseconds, pulse envelope
    sigma_ax_mm = C_MM_US * sigma_t / 2                       # round trip
    lam = C_MM_US / f0
    sigma_lat_mm = lam * fnum / 2.355
    sig_ax = max(sigma_ax_mm / probe.sp * scale, 0.9 * scale)
    sig_lat = max(sigma_lat_mm / probe.sp * scale, 1.4 * scale)
    depth_px = probe.depth_mm / probe.sp
    focus = _u(rng, cfg.focus_frac) * depth_px
    # depth of field of a focused beam ~ 7 lambda F#^2; keep it within a sensible fraction of the image
    dof_mm = 7.0 * lam * fnum * fnum
    zr = float(np.clip(dof_mm / probe.sp / 2, 0.2 * depth_px, 0.8 * depth_px))
    return PSF(sig_ax, sig_lat, focus, zr, f0, alpha)


def _gauss_kernel(sigma: float) -> np.ndarray:
    r = max(int(math.ceil(3 * sigma)), 1)
    x = np.arange(-r, r + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / np.sqrt((k * k).sum())).astype(np.float32)   # unit energy: white noise keeps unit variance


def scatter_fields(rng, amp: np.ndarray | None, shape, psf: PSF, margin: int, n: int = 3) -> list[np.ndarray]:
    """``n`` independent IQ fields (Hc x Wc x 2 float32): complex Gaussian scatterers times ``amp``
    (sqrt of echogenicity; None = 1), convolved with the depth-dependent PSF. Unit mean intensity
    where ``amp`` is 1."""
    Hc, Wc = shape
    ky = _gauss_kernel(psf.sigma_ax_px)
    one = np.ones(1, np.float32)
    z = (np.arange(Hc, dtype=np.float32) - margin)
    sig_z = psf.sigma_lat_focus_px * np.sqrt(1 + ((z - psf.focus_px) / psf.rayleigh_px) ** 2)
    lo, hi = float(sig_z.min()), float(sig_z.max())
    sigmas = [lo, (lo + hi) / 2, hi] if hi > lo * 1.15 else [lo]
    # per-row blend weights between the precomputed lateral widths (piecewise linear in sigma)
    if len(sigmas) == 3:
        t = (sig_z - lo) / (hi - lo) * 2.0
        w0 = np.clip(1 - t, 0, 1)
        w2 = np.clip(t - 1, 0, 1)
        w1 = 1 - w0 - w2
        weights = [w.astype(np.float32)[:, None, None] for w in (w0, w1, w2)]
    out = []
    for _ in range(n):
        w = rng.standard_normal((Hc, Wc, 2), dtype=np.float32)
        w *= np.float32(math.sqrt(0.5))
        if amp is not None:
            w *= amp[:, :, None]
        w = cv2.sepFilter2D(w, -1, one, ky, borderType=cv2.BORDER_REFLECT)
        if len(sigmas) == 1:
            f = cv2.sepFilter2D(w, -1, _gauss_kernel(sigmas[0]), one, borderType=cv2.BORDER_REFLECT)
        else:
            f = None
            for s, wt in zip(sigmas, weights):
                g = cv2.sepFilter2D(w, -1, _gauss_kernel(s), one, borderType=cv2.BORDER_REFLECT)
                g *= wt
                f = g if f is None else cv2.add(f, g)
        out.append(f)
    return out


def rayleigh_field(rng, shape, sigma_ax=1.0, sigma_lat=2.0) -> np.ndarray:
    """Envelope of one uniform speckle field (for tests and calibration)."""
    psf = PSF(sigma_ax, sigma_lat, 0.0, 1e9, 10.0)
    f = scatter_fields(rng, None, shape, psf, 0, n=1)[0]
    return np.sqrt(f[..., 0] ** 2 + f[..., 1] ** 2)


def depth_gain(rng, cfg, probe: Probe, psf: PSF) -> np.ndarray:
    """Per-pixel intensity gain over depth: tissue attenuation (two way) partly given back by TGC,
    plus a slider-shaped residual. Returns (attenuation, tgc) maps, H x W float32."""
    alpha = psf.atten_db_cm_mhz
    comp = _u(rng, cfg.tgc_compensation)
    ripple = _u(rng, cfg.tgc_ripple_db)
    yy, xx = np.mgrid[0:probe.H, 0:probe.W].astype(np.float32)
    d_mm = np.clip(probe.depth_px(xx, yy), 0, None) * probe.sp
    atten_db = -alpha * psf.freq_mhz * 2 * d_mm / 10.0           # dB (intensity), d in cm
    # TGC: 8 slider knots over depth
    knots = rng.uniform(-1, 1, 8) * ripple
    kd = np.linspace(0, probe.depth_mm, 8)
    tgc_db = np.minimum(-comp * atten_db, 50.0) + np.interp(d_mm, kd, knots)
    att = np.power(10.0, atten_db / 10.0).astype(np.float32)
    tgc = np.power(10.0, tgc_db / 10.0).astype(np.float32)
    return att, tgc


def log_compress(intensity: np.ndarray, ref: float, dr_db: float, ref_grey: float, out=None) -> np.ndarray:
    """Map linear intensity to 8 bit: ``ref`` lands on grey ``ref_grey``, ``dr_db`` spans 0..255."""
    x = np.maximum(intensity, 1e-12)
    cv2.log(x, x)                                    # natural log, in place
    k = 255.0 / dr_db * (10.0 / math.log(10.0))      # grey levels per neper of intensity
    b = ref_grey - k * math.log(ref)
    x *= k
    x += b
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8) if out is None else np.copyto(out, x, casting="unsafe")
