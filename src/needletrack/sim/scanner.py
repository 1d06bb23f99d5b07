"""Scanner processing of the simulated echoes (simulator v2): spatially compounded speckle on scan lines,
a speckle-reduction filter, the grey map, and the speckle grain measure used to match real images."""
from __future__ import annotations

import math

import cv2
import numpy as np

from needletrack.sim.bmode import PSF, scatter_fields

_LOOKS_MAP: dict = {}


def _looks_map(looks: int):
    """Table (uniform in x over 0.._LOOKS_XMAX) mapping a one-look speckle intensity (exponential, unit mean)
    onto the unit-mean intensity of ``looks`` compounded looks (gamma of shape ``looks``, scale 1/looks) with the
    same rank (quantile mapping)."""
    if looks not in _LOOKS_MAP:
        from scipy.special import gammaincinv

        x = np.linspace(0.0, _LOOKS_XMAX, _LOOKS_N + 1)
        u = np.clip(-np.expm1(-x), 0.0, 1.0 - 1e-15)
        _LOOKS_MAP[looks] = (gammaincinv(looks, u) / looks).astype(np.float32)
    return _LOOKS_MAP[looks]


_LOOKS_XMAX, _LOOKS_N = 32.0, 8192


def _compound(s: np.ndarray, looks: int) -> np.ndarray:
    """:func:`_looks_map` applied to a one-look intensity field (linear interpolation on a uniform table)."""
    t = _looks_map(looks)
    k = np.minimum(s, np.float32(_LOOKS_XMAX * (1 - 1e-6))) * np.float32(_LOOKS_N / _LOOKS_XMAX)
    i = k.astype(np.int32)
    k -= i
    lo = t[i]
    lo += (t[i + 1] - lo) * k
    return lo


def speckle_intensity(rng, shape, psf: PSF, margin: int, looks: int = 3, realizations: int = 2,
                      line_px: float = 2.0) -> list[np.ndarray]:
    """``realizations`` independent unit-mean speckle intensity fields (Hc x Wc float32) as a scanner
    shows them after spatial compounding and scan conversion.

    Spatial compounding averages the intensity of ``looks`` steered looks, whose speckle patterns are independent
    and share the PSF: the compound is gamma-distributed with shape ``looks`` (speckle contrast 1/sqrt(looks))
    and has the single look's correlation length. It is formed from one look per field, mapped rank for rank
    onto that gamma distribution (quantile mapping: the same marginal statistics as averaging the looks, at the
    cost of one look). The fields are formed on scan lines ``line_px`` display pixels apart and interpolated
    laterally (linear, as scan conversion does), which elongates the grain laterally. The speckle is computed
    once per sequence and warped with the tissue: it is fixed to it.
    """
    Hc, Wc = shape
    looks = max(int(looks), 1)
    wl = max(int(math.ceil(Wc / max(line_px, 1.0))), 8)
    q = Wc / wl
    p2 = PSF(psf.sigma_ax_px, max(psf.sigma_lat_focus_px / q, 0.7), psf.focus_px, psf.rayleigh_px, psf.freq_mhz)
    f = scatter_fields(rng, None, (Hc, wl), p2, margin, n=realizations)
    out = []
    for r in range(realizations):
        re, im = f[r][..., 0], f[r][..., 1]
        s = re * re + im * im
        if looks > 1:
            s = _compound(s, looks)
        if wl != Wc:
            s = cv2.resize(s, (Wc, Hc), interpolation=cv2.INTER_LINEAR)
        out.append(np.ascontiguousarray(s, dtype=np.float32))
    return out


def speckle_reduction(s: np.ndarray, psf: PSF, strength: float) -> np.ndarray:
    """A scanner's speckle-reduction filter (SRI-like) on a unit-mean speckle intensity field: a Gaussian blur of
    the log intensity ``strength`` speckle grains wide (sigma = strength x the PSF's axial and focal lateral
    sigma), renormalised to unit mean. Applied to the speckle alone (not to the anatomy's edges), it acts as an
    ideal edge-preserving filter: the grain grows by sqrt(1 + strength^2) along each axis and the grey-level
    spread of the speckle falls by about that factor. ``strength`` <= 0 returns ``s`` unchanged."""
    if strength <= 0:
        return s
    ls = np.log(np.maximum(s, np.float32(1e-6)))
    ls = cv2.GaussianBlur(ls, (0, 0), sigmaX=max(strength * psf.sigma_lat_focus_px, 0.3),
                          sigmaY=max(strength * psf.sigma_ax_px, 0.3), borderType=cv2.BORDER_REFLECT)
    out = np.exp(ls)
    out *= np.float32(1.0 / max(float(out.mean()), 1e-12))
    return out.astype(np.float32, copy=False)


def grey_map(curve: float, floor: float = 0.0) -> np.ndarray:
    """A scanner grey map as a 256-entry LUT over the log-compressed grey level ``x``: an exponential curve
    ``(exp(curve x/255) - 1) / (exp(curve) - 1)`` lifted onto a display floor ``floor`` (0..255).

    On the log-compressed echo this is a power-law compression of the intensity at the bright end (strong
    echoes stand out: positively skewed grey levels) and nearly linear at the dark end (gentle: weak echoes
    and the electronic noise stay dark grey instead of being crushed to black). ``curve`` -> 0 is linear."""
    x = np.arange(256, dtype=np.float64) / 255.0
    c = max(float(curve), 1e-3)
    y = np.expm1(c * x) / math.expm1(c)
    y = floor + (255.0 - floor) * y
    return np.round(np.clip(y, 0, 255)).astype(np.uint8)


def grain_fwhm(img: np.ndarray, max_lag: int = 24, smooth: float = 8.0) -> tuple[float, float]:
    """(lateral, axial) FWHM in px of the autocorrelation of an image's fine texture (the grey image
    minus a Gaussian blur of ``smooth`` px): the speckle grain size."""
    x = np.asarray(img, np.float32)
    x = x - cv2.GaussianBlur(x, (0, 0), smooth)
    x -= x.mean()
    v = float((x * x).mean())
    if v <= 1e-9:
        return 0.0, 0.0
    res = []
    for axis in (1, 0):
        prev = 1.0
        fw = float(max_lag) * 2
        for k in range(1, max_lag + 1):
            a = x[:, :-k] if axis == 1 else x[:-k]
            b = x[:, k:] if axis == 1 else x[k:]
            c = float((a * b).mean()) / v
            if c < 0.5:
                fw = 2.0 * ((k - 1) + (prev - 0.5) / max(prev - c, 1e-9))
                break
            prev = c
        res.append(fw)
    return res[0], res[1]
