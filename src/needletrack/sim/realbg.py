"""Real backgrounds for the sequence simulator: a still image (cropped in its own pixels) or a window of a
real cine played back and forth (the liver sweep), with the synthetic speckle mixed in."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from needletrack.sim import bmode, scanner
from needletrack.sim.backgrounds import has_markers, load_backgrounds
from needletrack.sim.bmode import _u


def _as_moving(frames):
    """Blocks of consecutive real frames: a list of uint8 images (one block) or a list of such lists."""
    if frames is None or len(frames) == 0:
        return []
    if isinstance(frames[0], np.ndarray) and frames[0].ndim == 2:
        return [list(frames)]
    return [list(b) for b in frames if len(b) > 0]


_VALID: dict = {}


def _valid_area(frames):
    """Where the sweep has image content (its fan), from the brightest of a few frames."""
    key = (id(frames[0]), len(frames))
    if key not in _VALID:
        mx = np.max(np.stack([frames[i] for i in range(0, len(frames), max(len(frames) // 6, 1))]), axis=0)
        v = cv2.blur(mx, (9, 9)) > 4
        v = cv2.erode(v.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
        _VALID.clear()
        _VALID[key] = v
    return _VALID[key]


def real_probe(rng, cfg, H: int, W: int, img_shape, margin_mm: float = 3.0) -> bmode.Probe:
    """Linear-probe geometry for a still real background: the whole image is shown at the scale of its longest
    side over the frame's (never enlarged: a real frame seen at the yardstick's 256 px keeps its grain), its
    outer ``margin_mm`` (at most 6 % of a side) is the canvas margin for the probe's travel, and the image area
    has the picture's own aspect ratio (black beside or below it, as on a scanner's screen)."""
    h, w = img_shape
    depth_mm = _u(rng, cfg.depth_mm)
    f = min(H / h, W / w)
    Hc, Wc = max(int(math.floor(h * f)), 8), max(int(math.floor(w * f)), 8)
    m = int(math.ceil(margin_mm / (depth_mm / Hc)))
    m = int(min(m, 0.06 * min(Hc, Wc)))
    hc, wc = Hc - 2 * m, Wc - 2 * m
    sp = depth_mm / hc
    x0 = (W - Wc) // 2 + m
    y0 = m + int(rng.integers(0, H - Hc + 1))
    yy, xx = np.mgrid[0:H, 0:W]
    content = (xx >= x0) & (xx < x0 + wc) & (yy >= y0) & (yy < y0 + hc)
    return bmode.Probe("linear", H, W, sp, depth_mm, content, (x0, y0, x0 + wc, y0 + hc), (Hc, Wc), m,
                       x0=float(x0), y0=float(y0))


def _as_backgrounds(backgrounds):
    if backgrounds is None:
        return []
    if isinstance(backgrounds, (str, Path)):
        return load_backgrounds(backgrounds)
    return list(backgrounds)


class RealBackgroundMixin:
    """SequenceSimulator methods for real backgrounds."""

    def _setup_real(self, rng, mrng, bg, frames, cfg, psf, looks, gain_db, Hc, Wc, m, depth_px):
        """A real background (a still image or a window of a real cine) under a little synthetic speckle; returns the
        target (canvas px)."""
        img, lmask, bmeta = bg
        if self.moving:
            img, f_img, (tcx, tcy), grain = self._fit_moving(mrng, frames, (Hc, Wc), m, depth_px)
        else:
            img, f_img, (tcx, tcy), grain = self._fit_background(rng, img, lmask, (Hc, Wc), m, depth_px)
        self.src_scale = 1.0 / f_img
        # the synthetic speckle (and the needle) take the background's own grain, in the image's pixels
        sa = max(grain[1] / 2.355, 0.6)
        sl = max(grain[0] / 2.355, 0.8)
        psf_img = bmode.PSF(sa, sl, psf.focus_px / f_img, 1e9, psf.freq_mhz)
        # compounded like the scanner's own speckle (the real image's grain is already compounded)
        S = scanner.speckle_intensity(rng, img.shape, psf_img, 0, looks, 1, 1.0)
        S.append(np.ascontiguousarray(S[0][:, ::-1]))
        psf.sigma_ax_px = float(np.clip(min(sa * f_img, psf.sigma_ax_px), 0.7, 4.0))
        psf.sigma_lat_focus_px = float(np.clip(sl * f_img, 1.0, 12.0))
        dr0 = 50.0
        log_lr = img.astype(np.float32) * np.float32(dr0 / 255.0 * math.log(10.0) / 10.0)
        lin = np.exp(log_lr)
        # the local echo level under the synthetic speckle: a blur of the log image (a blur of the linear image
        # would brighten it: the mean of the intensity lies above its geometric mean)
        log_ls = cv2.GaussianBlur(log_lr, (0, 0), max(sl * 1.5, 2.0))
        self.alpha = al = np.float32(_u(rng, cfg.real_speckle_mix))
        self.fields = []
        # the real image's own fine detail about that level and the synthetic speckle's, brought to the same
        # spread, are blended with weights that keep the spread (a plain blend of two independent textures
        # lowers the local contrast by sqrt((1-a)^2 + a^2): a smoother, flatter picture than the real one)
        det = log_lr - log_ls
        sd_real = float(det.std())
        norm = np.float32(1.0 / math.sqrt((1 - al) ** 2 + al ** 2))
        for Sk in S:
            ls = np.log(np.maximum(Sk, 1e-6))
            ls -= np.float32(ls.mean())
            sd = max(float(ls.std()), 1e-6)
            ls *= np.float32(max(sd_real, sd) / sd)     # (a grainless picture keeps the speckle's own spread)
            t = log_ls + norm * ((1 - al) * det + al * ls)
            self.fields.append(np.exp(t).astype(np.float32))
        self.ref_power = float(np.median(lin))
        if self.moving:   # the real frames carry their own speckle: no synthetic speckle, no second realization
            self.alpha = np.float32(0.0)
            self._mv_cache = {}
        # the real picture is what its scanner displayed, persistence included: no second frame averaging
        self.persist = 0.0
        self.gain = self.tgc = None
        self.noise_power = 0.0
        self.dr = dr0 * rng.uniform(0.9, 1.15)
        med_grey = float(np.median(img))
        # the real image is already grey-mapped: invert nothing, keep its grey levels (identity LUT)
        self.lut = None
        self.sharpen = 0.0      # nor its edge enhancement (the real image has its own)
        # the real image was recorded at its own gain: only a residual gain of -1.5..4.5 dB is added, at the rank of
        # the sequence's gain draw (the synthetic presets' wide gain range would shift the real grey levels by up to
        # +-20 grey levels)
        lo, hi = float(cfg.gain_db[0]), float(cfg.gain_db[1])
        resid_db = -1.5 + 6.0 * ((gain_db - lo) / (hi - lo) if hi > lo else 0.5)
        self.ref_grey = med_grey * dr0 / self.dr + resid_db * 255 / self.dr
        self.source = f"needletrack.sim on real background {bmeta.get('name', '?')} ({bmeta.get('source', '?')})"
        return tcx, tcy

    def _fit_background(self, rng, img, lmask, shape, m, depth_px):
        """Crop of the background that covers the canvas, in the image's own pixels (the per-frame warp is
        the only resampling). Mirrored only when the image carries no burned-in text or markers.
        Returns (crop float32, canvas px per image px, target (canvas px), grain (lateral, axial) image px)."""
        Hc, Wc = shape
        if rng.random() < 0.5 and not has_markers(img):
            img = img[:, ::-1]
            lmask = lmask[:, ::-1]
        h, w = img.shape
        f = max(Hc / h, Wc / w)
        ch, cw = min(h, int(math.ceil(Hc / f))), min(w, int(math.ceil(Wc / f)))
        oy = int(rng.integers(0, h - ch + 1))
        ox = int(rng.integers(0, w - cw + 1))
        im = np.ascontiguousarray(img[oy:oy + ch, ox:ox + cw])
        lm = np.asarray(lmask[oy:oy + ch, ox:ox + cw], bool)
        mi = int(math.ceil(m / f))
        inner = np.zeros_like(lm)
        inner[mi:ch - mi, mi:cw - mi] = lm[mi:ch - mi, mi:cw - mi]
        if inner.any():
            ys, xs = np.nonzero(inner)
            target = (float(xs.mean()) * f, float(ys.mean()) * f)
        else:
            target = (rng.uniform(0.3, 0.7) * Wc, m + rng.uniform(0.3, 0.7) * depth_px)
        c0, c1 = ch // 4, 3 * ch // 4
        grain = scanner.grain_fwhm(im[c0:c1, cw // 8: cw - cw // 8])
        return im.astype(np.float32), f, target, grain

    def _fit_moving(self, rng, frames, shape, m, depth_px):
        """Crop (the same for every frame) inside the sweep's image area, the sweep plan over the source frames
        (ping-pong over a window of consecutive frames) and the needle's elevation that follows from it."""
        Hc, Wc = shape
        h, w = frames[0].shape
        valid = _valid_area(frames)
        aspect = Wc / Hc
        best = None
        for ch in range(h, 31, -8):          # the largest canvas-shaped rectangle inside the image area
            cw = int(round(ch * aspect))
            if cw > w:
                continue
            for oy in range(0, h - ch + 1, 8):
                for ox in sorted(range(0, w - cw + 1, 8), key=lambda v: abs(v - (w - cw) / 2)):
                    ys = np.linspace(oy, oy + ch - 1, 5).astype(int)
                    xs = np.linspace(ox, ox + cw - 1, 5).astype(int)
                    if all(valid[y, x] for y in ys for x in xs):
                        best = (oy, ox, ch, cw)
                        break
                if best:
                    break
            if best:
                break
        if best is None:
            best = (0, 0, h, w)
        oy, ox, ch, cw = best
        mirror = rng.random() < 0.5 and not has_markers(frames[0])
        f = max(Hc / ch, Wc / cw)
        self._mv_crop = (oy, ox, ch, cw, mirror)
        self._mv_frames = frames
        # the sweep: a window of W consecutive frames played back and forth at `rate` sweep frames per source
        # frame (the operator rocks the probe about the needle); out-of-plane travel 0.56 mm per sweep frame
        n_src = (self.n - 1) * self.step + 1
        nf = len(frames)
        Wn = int(min(nf, rng.integers(3, 13)))
        w0 = int(rng.integers(0, nf - Wn + 1))
        rate = rng.uniform(0.01, 0.08)
        ph = (np.arange(n_src) * rate + rng.uniform(0, 0.5)) % max(2 * (Wn - 1), 1)
        pos = np.where(ph <= Wn - 1, ph, 2 * (Wn - 1) - ph) if Wn > 1 else np.zeros(n_src)
        self.sweep_idx = w0 + pos
        mm_per = float(self.cfg.extra.get("sweep_mm_per_frame", 78.0 / 140.0)) * rng.choice([-1.0, 1.0])
        ref = float(self.sweep_idx[0]) if rng.random() < self.cfg.first_visible_prob else float(
            w0 + rng.uniform(0, Wn - 1))
        self.sweep_elev = (self.sweep_idx - ref) * mm_per
        im = self._moving_crop(int(np.floor(self.sweep_idx[0])))
        c0, c1 = ch // 4, 3 * ch // 4
        grain = scanner.grain_fwhm(im[c0:c1, cw // 8: cw - cw // 8])
        target = (rng.uniform(0.3, 0.7) * Wc, m + rng.uniform(0.3, 0.7) * depth_px)
        return im.astype(np.float32), f, target, grain

    def _moving_crop(self, i):
        oy, ox, ch, cw, mirror = self._mv_crop
        im = self._mv_frames[int(np.clip(i, 0, len(self._mv_frames) - 1))][oy:oy + ch, ox:ox + cw]
        return np.ascontiguousarray(im[:, ::-1] if mirror else im)

    def _moving_field(self, j):
        """Linear echo field of the sweep at source frame ``j``: neighbouring real frames blended (the plane
        between two acquired planes)."""
        x = float(self.sweep_idx[j])
        a = int(np.floor(x))
        f = x - a
        out = None
        for i, wt in ((a, 1.0 - f), (a + 1, f)):
            if wt < 1e-3 or i >= len(self._mv_frames):
                continue
            if i not in self._mv_cache:
                if len(self._mv_cache) > 16:
                    self._mv_cache.clear()
                lg = self._moving_crop(i).astype(np.float32) * np.float32(50.0 / 255.0 * math.log(10.0) / 10.0)
                self._mv_cache[i] = np.exp(lg)
            out = self._mv_cache[i] * np.float32(wt) if out is None else cv2.scaleAdd(
                self._mv_cache[i], float(wt), out)
        return out if out is not None else self.fields[0]
