"""B-mode image formation: probe geometry, scatterer fields convolved with the PSF, attenuation,
TGC, noise and log compression.

The simulation works at baseband (IQ): random complex scatterers weighted by the tissue
echogenicity are convolved with the pulse-echo PSF, whose axial part is the Gaussian envelope of the
Gaussian-modulated pulse (the carrier is removed by demodulation) and whose lateral part is a
Gaussian beam whose width follows the focus. The envelope is ``|IQ|``. A uniform region therefore
gives fully developed speckle with Rayleigh statistics (envelope SNR = mean/std = 1.91).

Fields are precomputed once per sequence on a *canvas* in beam coordinates (lateral position or
beam angle across, depth down) that is larger than the image by the probe's travel; each frame only
resamples them. The scanner's processing of the speckle (compounding, scan lines, speckle reduction, grey
map) is in ``scanner``.
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


def make_probe(rng: np.random.Generator, cfg, H: int, W: int, margin_mm: float = 3.0) -> Probe:
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
    depth_mm = _u(rng, cfg.convex_depth_mm)
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

    @property
    def axial_res_px(self) -> float:
        """Axial resolution: FWHM (px) of the pulse-echo power profile along the beam, exp(-u^2/sigma^2)."""
        return 2.0 * math.sqrt(math.log(2.0)) * self.sigma_ax_px


def make_psf(rng, cfg, probe: Probe) -> PSF:
    f0 = _u(rng, cfg.freq_mhz)
    alpha = _u(rng, cfg.atten_db_cm_mhz)
    # operators pick a lower frequency for deeper imaging: keep the round-trip loss at full depth
    # within what the TGC can give back (35-60 dB)
    f0 = min(f0, max(rng.uniform(35.0, 60.0) / (alpha * 2 * probe.depth_mm / 10.0), 3.0))
    bw = _u(rng, cfg.frac_bandwidth)
    fnum = _u(rng, cfg.f_number)
    scale = _u(rng, cfg.speckle_scale)
    ascale = _u(rng, getattr(cfg, "axial_scale", (1.0, 1.0)))
    sigma_f = bw * f0 / (2 * math.sqrt(2 * math.log(2)))      # MHz, amplitude spectrum
    sigma_t = 1.0 / (2 * math.pi * sigma_f)                   # microseconds, pulse envelope
    sigma_ax_mm = C_MM_US * sigma_t / 2                       # round trip
    lam = C_MM_US / f0
    sigma_lat_mm = lam * fnum / 2.355
    sig_ax = max(sigma_ax_mm / probe.sp * ascale, 0.9 * ascale)
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


_ONE = np.ones(1, np.float32)


def _lateral(x: np.ndarray, sigma: float) -> np.ndarray:
    """Lateral (along rows) unit-energy Gaussian filter of ``sigma`` px, reflecting borders."""
    return cv2.sepFilter2D(x, -1, _gauss_kernel(sigma), _ONE, borderType=cv2.BORDER_REFLECT)


def scatter_fields(rng, amp: np.ndarray | None, shape, psf: PSF, margin: int, n: int = 3) -> list[np.ndarray]:
    """``n`` independent IQ fields (Hc x Wc x 2 float32 each): complex random scatterers times ``amp``
    (sqrt of echogenicity; None = 1), convolved with the depth-dependent PSF. Unit mean intensity
    where ``amp`` is 1.

    Scatterer amplitudes are uniform (zero mean, variance 1/2 per quadrature): after the PSF sums
    many of them the field is circular Gaussian (central limit), i.e. Rayleigh envelope, at a
    fraction of the cost of normal draws. The lateral width follows depth (Gaussian beam around the
    focus) by blending two filtered copies row by row.
    """
    Hc, Wc = shape
    ky = _gauss_kernel(psf.sigma_ax_px)
    z = (np.arange(Hc, dtype=np.float32) - margin)
    sig_z = psf.sigma_lat_focus_px * np.sqrt(1 + ((z - psf.focus_px) / psf.rayleigh_px) ** 2)
    lo, hi = float(sig_z.min()), float(sig_z.max())
    a = math.sqrt(1.5)
    w = rng.random((Hc, Wc, 2 * n), dtype=np.float32)
    w *= np.float32(2 * a)
    w -= np.float32(a)
    if amp is not None:
        w *= amp[:, :, None]
    # the axial filter once (shared by both lateral widths), then the lateral filters row by row (exact: the
    # Gaussian PSF is separable)
    # (on the fields laid side by side as one single-channel image: the same column filter, several times faster
    # than OpenCV's multi-channel path)
    a_ = cv2.sepFilter2D(w.reshape(Hc, Wc * 2 * n), -1, _ONE, ky, borderType=cv2.BORDER_REFLECT).reshape(Hc, Wc, 2 * n)
    if hi <= lo * 1.1:
        f = _lateral(a_, (lo + hi) / 2)
    else:
        # blend weights so that the blended width follows sig_z (second moments add linearly)
        t = np.clip((sig_z ** 2 - lo ** 2) / (hi ** 2 - lo ** 2), 0, 1).astype(np.float32)
        g = _lateral(a_, hi)
        # linear weights: the two copies are strongly correlated (same scatterers), so the power
        # stays within ~0.3 dB of one
        f = _lateral(a_, lo)
        f *= (1 - t)[:, None, None]
        g *= t[:, None, None]
        f += g
    return [f[..., 2 * i:2 * i + 2] for i in range(n)]


def iq_planes(fields: list[np.ndarray]) -> list[np.ndarray]:
    """Contiguous 2D planes (re0, im0, re1, im1, ...) of fields from :func:`scatter_fields`."""
    base = fields[0].base if fields[0].base is not None else fields[0]
    if base.ndim == 3 and base.shape[2] == 2 * len(fields):
        return list(cv2.split(np.ascontiguousarray(base)))
    out = []
    for f in fields:
        out += list(cv2.split(np.ascontiguousarray(f)))
    return out


_UNIT_NOISE: dict = {}


def unit_noise(H: int, W: int) -> np.ndarray:
    """A band-limited unit-mean noise power field (exponential statistics), shared by all sequences of
    one frame size (fixed seed: it does not depend on, or disturb, any sequence's random stream).
    Each frame crops it at a random offset, so consecutive frames see independent noise."""
    key = (H, W)
    if key not in _UNIT_NOISE:
        rng = np.random.default_rng(20240611)
        f = scatter_fields(rng, None, (H, W), PSF(1.0, 1.6, 0.0, 1e9, 10.0), 0, n=1)[0]
        p = f[..., 0] ** 2 + f[..., 1] ** 2
        p /= float(p.mean())
        _UNIT_NOISE[key] = p.astype(np.float32)
    return _UNIT_NOISE[key]


_NEEDLE_TEX: dict = {}


def unit_speckle(h: int, w: int) -> np.ndarray:
    """A shared complex unit speckle field (h x w x 2), fixed seed, for needle surface texture."""
    key = (h, w)
    if key not in _NEEDLE_TEX:
        rng = np.random.default_rng(99173)
        _NEEDLE_TEX[key] = np.ascontiguousarray(scatter_fields(rng, None, (h, w), PSF(1.0, 2.0, 0.0, 1e9, 10.0), 0, n=1)[0])
    return _NEEDLE_TEX[key]


def rayleigh_field(rng, shape, sigma_ax=1.0, sigma_lat=2.0) -> np.ndarray:
    """Envelope of one uniform speckle field (for tests and calibration)."""
    psf = PSF(sigma_ax, sigma_lat, 0.0, 1e9, 10.0)
    f = scatter_fields(rng, None, shape, psf, 0, n=1)[0]
    return np.sqrt(f[..., 0] ** 2 + f[..., 1] ** 2)


def depth_gain(rng, cfg, probe: Probe, psf: PSF):
    """Per-pixel intensity gain over depth: tissue attenuation (two way) partly given back by TGC
    (at most 50 dB), plus a slider-shaped residual. Returns (attenuation, tgc) maps, H x W float32."""
    alpha = psf.atten_db_cm_mhz
    comp = _u(rng, cfg.tgc_compensation)
    ripple = _u(rng, cfg.tgc_ripple_db)
    knots = rng.uniform(-1, 1, 8) * ripple
    kd = np.linspace(0, probe.depth_mm, 8)
    # tabulate over depth, then look up per pixel
    dmax = probe.depth_mm * 1.5 + 1
    d_tab = np.linspace(0, dmax, 1024)
    atten_db = -alpha * psf.freq_mhz * 2 * d_tab / 10.0
    tgc_db = np.minimum(-comp * atten_db, 50.0) + np.interp(d_tab, kd, knots)
    att_tab = np.power(10.0, atten_db / 10.0)
    tgc_tab = np.power(10.0, tgc_db / 10.0)
    H, W = probe.H, probe.W
    if probe.kind == "linear":
        d_mm = np.clip((np.arange(H) - probe.y0) * probe.sp, 0, None)
        att = np.interp(d_mm, d_tab, att_tab).astype(np.float32)[:, None]
        tgc = np.interp(d_mm, d_tab, tgc_tab).astype(np.float32)[:, None]
        return np.repeat(att, W, axis=1), np.repeat(tgc, W, axis=1)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    d_mm = np.clip(probe.depth_px(xx, yy), 0, None) * probe.sp
    att = np.interp(d_mm.ravel(), d_tab, att_tab).reshape(H, W).astype(np.float32)
    tgc = np.interp(d_mm.ravel(), d_tab, tgc_tab).reshape(H, W).astype(np.float32)
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
