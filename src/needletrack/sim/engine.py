"""Sequence simulator: per-sequence precomputation, then cheap per-frame rendering.

Per sequence: probe geometry, PSF, anatomy (or a real background), three independent IQ scatterer
fields on the canvas, depth gain maps, the needle's path and the motion over all source frames.
Per output frame: the probe pose and tissue drag give a resampling map; the IQ fields are resampled
(cv2.remap) and mixed (elevational decorrelation); the needle's echo, comet tail, tip and shadow are
added; electronic noise, TGC and log compression give the 8-bit frame; the mask is the shaft's
in-plane visible extent at its physical width.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from needletrack.geometry import line_mask
from needletrack.sim import bmode
from needletrack.sim.anatomy import bench, breast
from needletrack.sim.backgrounds import has_markers, load_backgrounds
from needletrack.sim.config import SimConfig, preset as get_preset
from needletrack.sim.motion import make_motion, smooth_noise
from needletrack.sim.needle import (
    cnr_to_power, cross_profile, gauge_width_mm, incidence_deg, longest_run, shaft_cnr, shallow_weight, soft_ends,
    tip_cnr, tip_profile,
)
from needletrack.sim.overlay import make_overlay

_GRIDS: dict = {}
NEEDLE_MODES = ("moving", "still", "absent")


def _u(rng, r) -> float:
    lo, hi = float(r[0]), float(r[1])
    return lo if hi <= lo else float(rng.uniform(lo, hi))


def _grid(H, W):
    key = (H, W)
    if key not in _GRIDS:
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        _GRIDS[key] = (xx, yy)
    return _GRIDS[key]


def _size(size):
    if isinstance(size, (tuple, list)):
        H, W = int(size[0]), int(size[1])
    else:
        H = W = int(size)
    if H < 32 or W < 32:
        raise ValueError(f"frame size must be at least 32x32, got {H}x{W}")
    return H, W


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


def _as_backgrounds(backgrounds):
    if backgrounds is None:
        return []
    if isinstance(backgrounds, (str, Path)):
        return load_backgrounds(backgrounds)
    return list(backgrounds)


class SequenceSimulator:
    """Iterator over ``(frame_u8, mask_bool, needle_dict)`` of one simulated sequence; ``.meta`` holds
    the sequence's meta.json content. Built by :func:`simulate_sequence`."""

    def __init__(self, n_frames: int, size=448, preset="clinical", seed=0, backgrounds=None, frame_step=None,
                 needle: str = "moving", moving_background=None):
        if needle not in NEEDLE_MODES:
            raise ValueError(f"needle must be one of {', '.join(NEEDLE_MODES)}, got {needle!r}")
        if int(n_frames) < 1:
            raise ValueError("n_frames must be >= 1")
        self.n = int(n_frames)
        H, W = _size(size)
        cfg = preset if isinstance(preset, SimConfig) else get_preset(preset)
        self.cfg = cfg
        rng = np.random.default_rng(seed)
        self.frame_rng = np.random.default_rng([int(rng.integers(2**31)), 7])
        bgs = _as_backgrounds(backgrounds)
        bg = None
        if bgs and rng.random() < cfg.real_background_prob:
            bg = bgs[int(rng.integers(len(bgs)))]
        blocks = _as_moving(moving_background)
        self.moving = bool(blocks)
        if self.moving:    # a window of consecutive real frames (the liver sweep) is the background
            mrng = rng.spawn(1)[0]
            frames = blocks[int(mrng.integers(len(blocks)))]
            bg = (frames[0], np.zeros(frames[0].shape, bool), {"name": "moving window", "source": "real cine"})
        if frame_step is None:
            step = 1 if rng.random() < cfg.every_frame_prob else int(rng.integers(int(cfg.frame_step[0]),
                                                                                  int(cfg.frame_step[1]) + 1))
        else:
            step = int(frame_step)
            if step < 1:
                raise ValueError("frame_step must be >= 1")
        self.step = step
        self.H, self.W = H, W
        pcfg = cfg if bg is None else cfg.replace(convex_prob=0.0)
        probe = bmode.make_probe(rng, pcfg, H, W)
        self.probe = probe
        psf = bmode.make_psf(rng, cfg, probe)
        self.psf = psf
        Hc, Wc = probe.canvas_hw
        m = probe.margin
        depth_px = probe.depth_mm / probe.sp
        self.dr = _u(rng, cfg.dynamic_range_db)
        gain_db = _u(rng, cfg.gain_db)
        self.real = bg is not None
        # scanner processing drawn per sequence
        looks = int(rng.integers(int(cfg.compound_looks[0]), int(cfg.compound_looks[1]) + 1))
        line_px = _u(rng, cfg.scan_line_px)
        self.persist = _u(rng, cfg.persistence)
        self.lut = bmode.grey_map(_u(rng, cfg.grey_curve), _u(rng, cfg.grey_floor))
        self.src_scale = 1.0               # canvas px -> field px (real backgrounds: the image's own pixels)
        if bg is None:
            scene = bench if getattr(cfg, "scene", "breast") == "bench" else breast
            anat = scene(rng, cfg, (Hc, Wc), probe.sp, m, depth_px,
                          atten_db_mm=2 * psf.atten_db_cm_mhz * psf.freq_mhz / 10.0)
            S = bmode.speckle_intensity(rng, (Hc, Wc), psf, m, looks, 1, line_px)
            # the second realization: the same field mirrored laterally (an uncorrelated pattern with the same
            # depth-dependent PSF, at half the cost of a second draw)
            S.append(np.ascontiguousarray(S[0][:, ::-1]))
            ka = bmode._gauss_kernel(max(psf.sigma_ax_px * 0.5, 0.5))
            kl = bmode._gauss_kernel(max(psf.sigma_lat_focus_px * 0.5, 0.5))
            echo = cv2.sepFilter2D(anat.echo, -1, kl / kl.sum(), ka / ka.sum())
            spec = cv2.sepFilter2D(anat.spec, -1, kl / kl.sum(), ka / ka.sum())
            # two compounded speckle realizations fixed to the tissue (A; B for out-of-plane decorrelation)
            self.fields = [S[0] * echo + spec, S[1] * echo + spec]
            self.ref_power = anat.ref
            tcx, tcy = anat.target
            att, tgc = bmode.depth_gain(rng, cfg, probe, psf)
            self.gain = att * tgc
            self.tgc = tgc
            self.noise_power = self.ref_power * 10 ** (_u(rng, cfg.noise_floor_db) / 10)
            self.ref_grey = 170.0 + gain_db * 255.0 / self.dr
            self.source = ("needletrack.sim (bench: needle in water over a tissue block)" if scene is bench
                           else "needletrack.sim (synthetic breast)")
            self.alpha = 0.0
        else:
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
            S = bmode.speckle_intensity(rng, img.shape, psf_img, 0, looks, 1, 1.0)
            S.append(np.ascontiguousarray(S[0][:, ::-1]))
            psf.sigma_ax_px = float(np.clip(sa * f_img, 0.7, 4.0))
            psf.sigma_lat_focus_px = float(np.clip(sl * f_img, 1.0, 12.0))
            dr0 = 50.0
            log_lr = img.astype(np.float32) * np.float32(dr0 / 255.0 * math.log(10.0) / 10.0)
            lin = np.exp(log_lr)
            # the local echo level under the synthetic speckle: a blur of the log image (a blur of the linear image
            # would brighten it: the mean of the intensity lies above its geometric mean)
            log_ls = cv2.GaussianBlur(log_lr, (0, 0), max(sl * 1.5, 2.0))
            self.alpha = al = np.float32(_u(rng, cfg.real_speckle_mix))
            self.fields = []
            for Sk in S:
                ls = np.log(np.maximum(Sk, 1e-6))
                ls -= np.float32(ls.mean())
                t = (1 - al) * log_lr + al * (log_ls + ls)
                self.fields.append(np.exp(t).astype(np.float32))
            self.ref_power = float(np.median(lin))
            if self.moving:   # the real frames carry their own speckle: no synthetic speckle, no second realization
                self.alpha = np.float32(0.0)
                self._mv_cache = {}
            self.gain = self.tgc = None
            self.noise_power = 0.0
            self.dr = dr0 * rng.uniform(0.9, 1.15)
            med_grey = float(np.median(img))
            # the real image is already grey-mapped: invert nothing, keep its grey levels (identity LUT)
            self.lut = None
            self.ref_grey = med_grey * dr0 / self.dr + gain_db * 0.5 * 255 / self.dr
            self.source = f"needletrack.sim on real background {bmeta.get('name', '?')} ({bmeta.get('source', '?')})"
        # electronic noise: a band-limited exponential field (TGC applied), cropped at a random offset per frame
        pad = 32
        self.noise_pad = pad
        if self.tgc is not None:
            self.noise_scale = (self.tgc * np.float32(self.noise_power)).astype(np.float32)
            self.noise = bmode.unit_noise(H + pad, W + pad)
        self.content_u8 = probe.content.astype(np.uint8) * 255
        self.outside_any = not bool(probe.content.all())
        self.overlay = make_overlay(rng, probe, psf.focus_px) if rng.random() < cfg.overlay_prob else None
        # ---- needle -------------------------------------------------------------------------------
        self.gauge = int(rng.integers(int(cfg.gauge[0]), int(cfg.gauge[1]) + 1))
        self.od_mm = gauge_width_mm(self.gauge)
        self.width_px = self.od_mm / probe.sp
        # the mask is drawn at the physical width, but never thinner than 1.5 px (so that it stays a
        # connected line that contains its tip pixel at small frame sizes)
        self.mask_width_px = max(self.width_px, 1.5)
        lo, hi = cfg.angle_deg
        theta = lo + (hi - lo) * float(rng.beta(1.0, max(cfg.shallow_bias, 1e-3)))
        self.theta0 = theta
        self.entry_side = "left" if rng.random() < 0.5 else "right"
        sx = 1.0 if self.entry_side == "left" else -1.0
        self.dir0 = np.array([sx * math.cos(math.radians(theta)), math.sin(math.radians(theta))])
        self.norm0 = np.array([-self.dir0[1], self.dir0[0]]) * (1 if sx > 0 else -1)  # points away from the probe
        tw = self._canvas_to_world(tcx, tcy)
        # keep the target inside the image, at least a few mm below the skin and from the borders
        x0, y0, x1, y1 = probe.box
        mpx = 3.0 / probe.sp
        tw = np.array([np.clip(tw[0], x0 + 0.15 * (x1 - x0), x1 - 0.15 * (x1 - x0)),
                       np.clip(tw[1], y0 + mpx + 0.1 * (y1 - y0), y1 - 0.15 * (y1 - y0))])
        if not probe.content[int(tw[1]), int(tw[0])]:
            ys, xs = np.nonzero(probe.content)
            i = int(np.argmin((xs - tw[0]) ** 2 + (ys - tw[1]) ** 2))
            tw = np.array([xs[i], ys[i]], float)
        k = 0.0
        while True:
            p = tw - (k + 1.0) * self.dir0
            xi, yi = int(round(p[0])), int(round(p[1]))
            if not (0 <= xi < W and 0 <= yi < H and probe.content[yi, xi]):
                break
            k += 1.0
        self.entry = tw - k * self.dir0          # where the path enters the image (world px)
        s_target_px = max(k, 4.0 / probe.sp)
        sp = probe.sp
        self.bend = 0.0
        if rng.random() < cfg.bend_prob:
            self.bend = math.radians(_u(rng, cfg.bend_deg)) * rng.choice([-1.0, 1.0]) / max(s_target_px, 1.0)
        self.slab = _u(rng, cfg.slab_mm)
        self.tilt = math.tan(math.radians(_u(rng, cfg.tilt_deg))) * rng.choice([-1.0, 1.0])
        self.needle_gain_db = _u(rng, cfg.needle_gain_db)
        self.contrast_scale = _u(rng, cfg.contrast_scale)
        self.reverb_decay = _u(rng, cfg.reverb_decay)
        self.reverb_count = int(round(_u(rng, cfg.reverb_count)))
        self.back_wall = rng.uniform(0.1, 0.4)
        self.fill = rng.uniform(0.0, 0.04)
        # inner diameter: thin-wall (biopsy) to regular-wall needles, wall 0.1-0.2 mm
        self.id_px = max(self.od_mm - 2 * rng.uniform(0.1, 0.2), 0.3) / sp
        # tip at shallow incidence: dimmer than the shaft (0.4-0.9x), fading over the last 1-3 mm
        self.tip_ratio = rng.uniform(0.4, 0.9)
        self.tip_fade_px = rng.uniform(1.0, 3.0) / sp
        self.shadow = _u(rng, cfg.shadow)
        self.steer = _u(rng, cfg.steer_deg)
        self.bevel_px = self.od_mm * rng.uniform(2.0, 3.5) / sp
        # dropouts (fixed along the path) and surface texture (fixed on the needle)
        self.drop_s = rng.uniform(0, s_target_px * 1.3, int(rng.poisson(2.0)))
        self.drop_w = rng.uniform(1.0, 4.0, len(self.drop_s)) / sp
        self.drop_d = np.array([_u(rng, cfg.dropout) for _ in self.drop_s])
        L = int(max(H, W) * 2)
        self.texture = np.exp(0.5 * smooth_noise(rng, L, 1.0, max(0.7 / sp, 2.0), 1.0))
        # grainy echo texture fixed on the needle (Rician: specular part plus a speckle part)
        tex_u = int(self.width_px * 6 + 64)
        zf = bmode.unit_speckle(512, 1024)
        r0 = int(rng.integers(0, max(512 - tex_u, 1)))
        c0 = int(rng.integers(0, 1024 - min(L, 1024) + 1))
        zf = zf[r0:r0 + tex_u, c0:c0 + L]
        mr = rng.uniform(0.35, 0.8)
        ntex = (1 + mr * zf[..., 0]) ** 2 + (mr * zf[..., 1]) ** 2
        self.needle_tex = (ntex / (1 + mr * mr)).astype(np.float32)
        # motion over the source frames
        fps = cfg.fps
        n_src = (self.n - 1) * step + 1
        first = rng.random() < cfg.first_visible_prob
        min_in = max(3.0, 2.5 * self.od_mm, 0.1 * s_target_px * sp)
        if first:
            s0 = rng.uniform(min_in, max(min_in + 0.1, 0.75 * s_target_px * sp))
        else:
            s0 = -rng.uniform(1.0, 8.0)
        # where the shaft crosses the imaging plane (with out-of-plane tilt, only a stretch around it is
        # visible): the operator keeps the plane on the tip, so near the tip's starting point
        if first:
            self.s_ref = (s0 / sp) * rng.uniform(0.6, 1.0)
        else:
            self.s_ref = rng.uniform(0.5, 1.0) * s_target_px
        self.motion = make_motion(rng, cfg, n_src, fps, s_target_px * sp, s0, self.slab)
        if first:  # the first frame shows the needle: start inside the slab
            self.motion.elevation -= self.motion.elevation[0] * (abs(self.motion.elevation[0]) > 0.5 * self.slab)
        if needle == "still":      # the tip holds where it starts (tremor, probe drift and elevation wander stay)
            self.motion.s_tip[:] = self.motion.s_tip[0]
        elif needle == "absent":   # the needle never reaches the image: a needle-free sequence of the same scene
            self.motion.s_tip[:] = -1e4
        self.drag_sigma = rng.uniform(1.5, 4.0) / sp
        prng = rng.spawn(1)[0]     # own stream: the draws after keep their values
        bx0, by0, bx1, by1 = probe.box
        self.pulse_c = np.array([prng.uniform(bx0 + 0.15 * (bx1 - bx0), bx1 - 0.15 * (bx1 - bx0)),
                                 prng.uniform(by0 + 0.3 * (by1 - by0), by1 - 0.1 * (by1 - by0))])
        self.pulse_r = _u(prng, cfg.pulse_radius_mm) / sp
        self.decor = self.motion.decor
        self._prev = None
        self._prev_k = -2
        self.last_needle = None
        self.frame_idx = 0
        self.meta = {
            "fps": fps / step,
            "source_fps": fps,
            "frame_step": step,
            "pixel_spacing_mm": [sp, sp],
            "source": self.source,
            "probe": probe.kind,
            "depth_mm": round(probe.depth_mm, 3),
            "gauge": self.gauge,
            "needle_width_px": round(self.width_px, 3),
            "insertion_angle_deg": round(theta, 3),
            "entry_side": self.entry_side,
            "dynamic_range_db": round(self.dr, 2),
            "centre_frequency_mhz": round(psf.freq_mhz, 2),
            "seed": int(seed) if isinstance(seed, (int, np.integer)) else None,
        }

    # ------------------------------------------------------------------------------------------------
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
        grain = bmode.grain_fwhm(im[c0:c1, cw // 8: cw - cw // 8])
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
        grain = bmode.grain_fwhm(im[c0:c1, cw // 8: cw - cw // 8])
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

    def _canvas_to_world(self, cx, cy):
        p = self.probe
        m = p.margin
        if p.kind == "linear":
            return np.array([cx + p.x0 - m, cy + p.y0 - m], float)
        phi = (cx - p.canvas_hw[1] / 2.0) / p.ang_scale
        r = cy - m + p.R
        return np.array([p.ax + r * math.sin(phi), p.ay + r * math.cos(phi)], float)

    def __iter__(self):
        return self

    def __len__(self):
        return self.n

    def __next__(self):
        if self.frame_idx >= self.n:
            raise StopIteration
        k = self.frame_idx
        self.frame_idx += 1
        return self.render(k)

    # ------------------------------------------------------------------------------------------------
    def render(self, k: int):
        """Frame, mask and needle dict of output frame ``k``."""
        j = k * self.step
        mo = self.motion
        probe = self.probe
        sp = probe.sp
        H, W = self.H, self.W
        # probe pose: world = R(a)(p - c) + c + t, with c the centre of the probe face
        a = math.radians(float(mo.probe_deg[j]))
        ca, sa = math.cos(a), math.sin(a)
        cx = (probe.box[0] + probe.box[2]) / 2.0
        cy = float(probe.box[1])
        # breathing shifts the tissue and the needle in it under the probe (no speckle decorrelation)
        pxy = mo.probe_xy[j] + (mo.tissue_xy[j] if mo.tissue_xy is not None else 0.0)
        tx, ty = (float(v) for v in pxy / sp)
        # probe pressure: an axial squeeze of the tissue about the probe face (display depth y shows tissue from
        # depth y * kz: uniform strain over the image depth, the bottom held); the steel needle is not squeezed
        kz = 1.0 + (float(mo.compress[j]) / probe.depth_mm if mo.compress is not None else 0.0)
        ox = cx - ca * cx + sa * kz * cy + tx
        oy = cy - sa * cx - ca * kz * cy + ty

        def to_disp(P):
            qx = P[..., 0] - cx - tx
            qy = P[..., 1] - cy - ty
            return np.stack([ca * qx + sa * qy + cx, -sa * qx + ca * qy + cy], axis=-1)

        # ---- needle geometry (world -> display), visibility and ground truth ----------------------
        dth = float(mo.tremor_deg[j])
        c, s = math.cos(math.radians(dth)), math.sin(math.radians(dth))
        d = np.array([c * self.dir0[0] - s * self.dir0[1], s * self.dir0[0] + c * self.dir0[1]])
        nrm = np.array([c * self.norm0[0] - s * self.norm0[1], s * self.norm0[0] + c * self.norm0[1]])
        E = self.entry + mo.tremor_xy[j] / sp
        s_tip = float(mo.s_tip[j]) / sp
        s_lo = -0.5 * max(H, W)
        if s_tip > s_lo:
            ss = np.arange(s_lo, s_tip, 1.0)
            if ss[-1] < s_tip - 1e-6:
                ss = np.append(ss, s_tip)
        else:
            ss = np.zeros(0)
        bend = 0.5 * self.bend * np.clip(ss, 0, None) ** 2
        Pd = to_disp(E[None, :] + ss[:, None] * d[None, :] + bend[:, None] * nrm[None, :])
        xi = np.round(Pd[:, 0]).astype(int)
        yi = np.round(Pd[:, 1]).astype(int)
        inb = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
        inside = np.zeros(ss.size, bool)
        inside[inb] = probe.content[yi[inb], xi[inb]]
        elev = float(mo.elevation[j]) + self.tilt * (ss - self.s_ref) * sp
        if self.moving:     # the sweep carries the plane off the needle (and back)
            elev = elev + float(self.sweep_elev[j])
        in_slab = np.abs(elev) <= self.slab
        run = longest_run(inside & in_slab)
        if run is not None and (run[1] - 1 - run[0]) < max(3.0, 0.5 * self.width_px):
            run = None
        mask = np.zeros((H, W), bool)
        rendered = None
        tip = tail = angle = inc = None
        if run is not None:
            a0, b0 = run
            nseg = 1 if self.bend == 0.0 else min(6, max(1, (b0 - a0) // 20))
            knots = np.unique(np.linspace(a0, b0 - 1, nseg + 1).round().astype(int))
            for i0, i1 in zip(knots[:-1], knots[1:]):
                mask |= line_mask((H, W), Pd[i0], Pd[i1], self.mask_width_px)
            mask &= probe.content
            if mask.any():
                tail, tip = Pd[a0], Pd[b0 - 1]
                ddx, ddy = tip[0] - tail[0], tip[1] - tail[1]
                angle = float(math.degrees(math.atan2(ddy, abs(ddx))))
                rendered = self._render_needle(Pd, ss, elev, np.arange(a0, b0), s_tip)
                self.last_needle = rendered     # (power ROI, shadow ROI, incidence): physics tests
                inc = rendered[2]
            else:
                run = None
        # ---- tissue: resample the canvas fields at the probe pose, with drag near the shaft ---------
        roi = None
        drag_px = float(mo.drag[j]) / sp
        dragging = rendered is not None and abs(drag_px) > 0.05
        if dragging:
            pts = Pd[run[0]:run[1]]
            pad = int(3 * self.drag_sigma) + 2
            xa, xb = max(int(pts[:, 0].min()) - pad, 0), min(int(pts[:, 0].max()) + pad + 1, W)
            ya, yb = max(int(pts[:, 1].min()) - pad, 0), min(int(pts[:, 1].max()) + pad + 1, H)
            if xa < xb and ya < yb:
                roi = (ya, yb, xa, xb)
        # pulse: local expansion around an artery fixed in the tissue (display position follows the pose)
        pulse_px = float(mo.pulse[j]) / sp if mo.pulse is not None else 0.0
        pc = None
        if pulse_px > 0.05:
            pc = to_disp(self.pulse_c[None])[0]
            pad = int(2.5 * self.pulse_r) + 2
            pr = (max(int(pc[1]) - pad, 0), min(int(pc[1]) + pad + 1, H), max(int(pc[0]) - pad, 0),
                  min(int(pc[0]) + pad + 1, W))
            if pr[0] < pr[1] and pr[2] < pr[3]:
                roi = pr if roi is None else (min(roi[0], pr[0]), max(roi[1], pr[1]), min(roi[2], pr[2]),
                                              max(roi[3], pr[3]))
            else:
                pc = None
        pulse_w = None if pc is None else (self.pulse_c, pulse_px)
        # speckle fixed to the tissue: one compounded field, blended with a second realization only as far
        # as the probe has moved out of plane; resampled once at the probe pose
        w = float(self.decor[j])
        A, B = self.fields
        if self.moving:
            src = self._moving_field(j)
        elif w < 1e-3:
            src = A
        elif w > 1 - 1e-3:
            src = B
        else:
            src = cv2.addWeighted(A, 1.0 - w, B, w, 0.0)
        X, Y = _grid(H, W)
        q = self.src_scale
        if probe.kind == "linear":
            offx, offy = probe.x0 - probe.margin, probe.y0 - probe.margin
            M = np.array([[ca * q, -sa * kz * q, (ox - offx) * q], [sa * q, ca * kz * q, (oy - offy) * q]],
                         np.float32)
            # over a real background the scanner's own speckle is resampled: bicubic keeps its grain (bilinear
            # at sub-pixel offsets low-passes it: a blurred, less skewed image)
            interp = cv2.INTER_CUBIC if self.real else cv2.INTER_LINEAR
            flags = interp | cv2.WARP_INVERSE_MAP
            tissue = cv2.warpAffine(src, M, (W, H), flags=flags, borderMode=cv2.BORDER_REFLECT)
            if roi is not None:
                ya, yb, xa, xb = roi
                wx = ca * X[ya:yb, xa:xb] - (sa * kz) * Y[ya:yb, xa:xb] + np.float32(ox)
                wy = sa * X[ya:yb, xa:xb] + (ca * kz) * Y[ya:yb, xa:xb] + np.float32(oy)
                self._local(wx, wy, E, d, nrm, s_tip, drag_px if dragging else 0.0, pulse_w)
                mx, my = probe.to_canvas(wx, wy)
                if q != 1.0:
                    mx *= np.float32(q)
                    my *= np.float32(q)
                tissue[ya:yb, xa:xb] = cv2.remap(src, mx, my, interp, borderMode=cv2.BORDER_REFLECT)
        else:
            wx = ca * X - (sa * kz) * Y + np.float32(ox)
            wy = sa * X + (ca * kz) * Y + np.float32(oy)
            if roi is not None:
                ya, yb, xa, xb = roi
                self._local(wx[ya:yb, xa:xb], wy[ya:yb, xa:xb], E, d, nrm, s_tip, drag_px if dragging else 0.0,
                            pulse_w)
            mx, my = probe.to_canvas(wx, wy)
            tissue = cv2.remap(src, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if rendered is not None:
            (ya, yb, xa, xb), pw = rendered[0]
            (sya, syb, sxa, sxb), shade = rendered[1]
            tissue[sya:syb, sxa:sxb] *= shade
            tissue[ya:yb, xa:xb] += pw
        if self.gain is not None:
            tissue *= self.gain
            fr = self.frame_rng
            noy, nox = int(fr.integers(self.noise_pad)), int(fr.integers(self.noise_pad))
            tissue += self.noise[noy:noy + H, nox:nox + W] * self.noise_scale
        frame = self._compress(tissue)
        if self.lut is not None:
            frame = cv2.LUT(frame, self.lut)
        if self.persist > 0 and self._prev is not None and self._prev_k == k - 1:
            frame = cv2.addWeighted(self._prev, self.persist, frame, 1.0 - self.persist, 0.0)
        self._prev, self._prev_k = frame, k
        frame = frame.copy()
        if self.outside_any:
            cv2.bitwise_and(frame, self.content_u8, dst=frame)
        if self.overlay is not None:
            np.copyto(frame, self.overlay[0], where=self.overlay[1])
        tip_true = to_disp((E + s_tip * d + 0.5 * self.bend * max(s_tip, 0) ** 2 * nrm)[None])[0]
        visible = run is not None
        n_inside = int(inside.sum())
        vis_len = float(run[1] - 1 - run[0]) if visible else 0.0
        if n_inside:
            in_plane = bool(in_slab[inside].any())
        else:
            in_plane = bool(ss.size and abs(elev[-1]) <= self.slab)
        needle = {
            "frame": k,
            "visible": visible,
            "in_plane": in_plane,
            "visible_fraction": float(min(vis_len / max(n_inside - 1, 1), 1.0)) if visible else 0.0,
            "tip": [float(tip[0]), float(tip[1])] if visible else None,
            "tail": [float(tail[0]), float(tail[1])] if visible else None,
            "angle_deg": angle if visible else None,
            "entry_side": self.entry_side,
            "width_px": float(self.mask_width_px),
            "incidence_deg": inc if visible else None,
            "tip_true": [float(tip_true[0]), float(tip_true[1])],
            "source_frame": int(j),
            "time_s": round(j / self.cfg.fps, 4),
        }
        return frame, mask, needle

    def _compress(self, x):
        """Log compression to 8 bit (in place on ``x``)."""
        k = 255.0 / self.dr * (10.0 / math.log(10.0))
        b = self.ref_grey - k * math.log(self.ref_power)
        np.maximum(x, np.float32(math.exp(-b / k)), out=x)
        cv2.log(x, x)
        return cv2.convertScaleAbs(x, alpha=k, beta=b)

    def _local(self, wx, wy, E, d, nrm, s_tip, drag_px, pulse):
        """Local tissue motion on world-coordinate maps (in place): drag along the shaft, pulse."""
        if drag_px != 0.0:
            self._drag(wx, wy, E, d, nrm, s_tip, drag_px)
        if pulse is not None:
            (pcx, pcy), amp = pulse
            rx, ry = wx - np.float32(pcx), wy - np.float32(pcy)
            r2 = rx * rx + ry * ry
            # radial expansion: tissue at distance r comes from r - amp * g(r) (g peaks at the vessel wall)
            g = np.exp(np.float32(-0.5 / self.pulse_r ** 2) * r2)
            g *= np.float32(amp) / np.sqrt(r2 + np.float32(self.pulse_r ** 2 * 0.25))
            wx -= rx * g
            wy -= ry * g

    def _drag(self, wx, wy, E, d, nrm, s_tip, drag_px):
        """Move tissue near the shaft along it (in place on world-coordinate maps)."""
        rx, ry = wx - np.float32(E[0]), wy - np.float32(E[1])
        u = rx * np.float32(nrm[0]) + ry * np.float32(nrm[1])
        sv = rx * np.float32(d[0]) + ry * np.float32(d[1])
        wgt = np.exp(np.float32(-0.5 / self.drag_sigma ** 2) * u * u)
        wgt *= soft_ends(sv, 0.0, s_tip, self.drag_sigma).astype(np.float32)
        wx -= np.float32(drag_px * d[0]) * wgt
        wy -= np.float32(drag_px * d[1]) * wgt

    def _render_needle(self, Pd, ss, elev, idx, s_tip):
        """Echo power of the needle (ROI, float32), the shadow factor (ROI) and the median incidence."""
        probe = self.probe
        H, W = self.H, self.W
        pts = Pd[idx]
        P0, P1 = pts[0], pts[-1]
        chord = P1 - P0
        L = float(np.hypot(*chord))
        dc = chord / L if L > 0 else np.array([1.0, 0.0])
        nc = np.array([-dc[1], dc[0]])
        mid = (P0 + P1) / 2
        bxm, bym = (float(v) for v in probe.beam_dir(mid[0], mid[1]))
        if nc[0] * bxm + nc[1] * bym < 0:
            nc = -nc
        # brightness along the shaft
        if len(pts) > 2:
            tang = np.gradient(pts, axis=0)
        else:
            tang = np.tile(dc, (len(pts), 1))
        tn = np.maximum(np.hypot(tang[:, 0], tang[:, 1]), 1e-9)
        bxs, bys = probe.beam_dir(pts[:, 0], pts[:, 1])
        inc = np.abs(incidence_deg(bxs, bys, tang[:, 0] / tn, tang[:, 1] / tn) - self.steer)
        e = elev[idx]
        sv = ss[idx]
        # the elevational slice thickens away from the elevation focus (about 1-2 mm): the shaft fades as
        # it drifts out of it, more so near the probe
        dfrac = np.clip(probe.depth_px(pts[:, 0], pts[:, 1]) * probe.sp / probe.depth_mm, 0, 1)
        slab_d = self.slab * (0.75 + 0.5 * dfrac)
        elev_f = np.exp(-3.0 * (e / slab_d) ** 2)
        power = cnr_to_power(shaft_cnr(inc), self.ref_power, self.needle_gain_db, self.contrast_scale) * elev_f
        for s0, w0, d0 in zip(self.drop_s, self.drop_w, self.drop_d):
            power *= 1 - d0 * np.exp(-((sv - s0) / w0) ** 2)
        ti = np.clip((s_tip - sv).astype(int), 0, len(self.texture) - 1)
        power *= self.texture[ti]
        # the tip: at shallow incidence the specular shaft dominates and the tip is dimmer (tip_ratio, fading
        # over the last mm); at steep incidence the shaft fades while the bevel still echoes (tip CNR data)
        wsh = float(shallow_weight(np.median(inc)))
        tip_pow = 0.0
        tip_here = abs(float(ss[idx[-1]]) - s_tip) < 1.5
        if tip_here and wsh < 1.0:
            tp = cnr_to_power(tip_cnr(inc[-1]), self.ref_power, self.needle_gain_db, self.contrast_scale)
            tip_pow = float(max(tp - power[-1], 0.0) * elev_f[-1]) * (1.0 - wsh)
        # cross-section: front wall, back wall and comet tail along the beam
        bdotn = abs(nc[0] * bxm + nc[1] * bym)
        # the wall echo is as thick as the axial resolution (along the beam), projected on the shaft normal
        sig_u = math.hypot(self.psf.sigma_ax_px * bdotn, self.psf.sigma_lat_focus_px * 0.3 * math.sqrt(max(1 - bdotn ** 2, 0)))
        sig_u = max(sig_u, 0.7)
        r = self.width_px / 2
        spacing = max(self.id_px, 1.5)
        count = self.reverb_count
        t_k = (pts - P0) @ dc
        o_k = (pts - P0) @ nc
        omin, omax = float(min(o_k.min(), 0)), float(max(o_k.max(), 0))
        u_top = r + 3 * sig_u + 2 - omin
        u_bot = -r + (count + 1) * spacing + 3 * sig_u + 2 + omax
        t_pad = 3 * self.psf.sigma_lat_focus_px + 2
        tg = np.arange(-t_pad, L + t_pad + 1, 1.0)
        ug = np.arange(-u_top, u_bot + 1, 1.0)
        pw_t = np.interp(tg, t_k, power, left=0.0, right=0.0) * soft_ends(tg, 0.0, L, self.psf.sigma_lat_focus_px)
        if tip_here:
            pw_t = pw_t * (wsh * tip_profile(tg, L, self.tip_ratio, self.tip_fade_px) + (1.0 - wsh))
        if self.bend != 0.0:
            off = np.interp(tg, t_k, o_k)
            uu = ug[:, None] - off[None, :]
        else:
            uu = ug[:, None]
        # each repeat broken into fragments: an independent slice of the needle's fixed speckle texture
        th, tw_ = self.needle_tex.shape
        cols = np.clip((s_tip - (ss[idx[0]] + tg)).astype(int), 0, tw_ - 1)
        frag = [self.needle_tex[(17 * (k + 1)) % th, cols][None, :] ** 1.5 for k in range(count + 1)]
        prof = cross_profile(uu, r, sig_u, spacing, self.reverb_decay, count, self.back_wall, self.fill, frag)
        strip = prof * pw_t[None, :]
        # texture: rows = u (clipped to the texture height), columns = distance from the tip
        rows = np.clip((ug - ug[0]).astype(int), 0, th - 1)
        strip *= self.needle_tex[rows[:, None], cols[None, :]]
        if tip_pow > 0:
            sb = max(self.bevel_px / 3, 1.0)
            tb = np.exp(-0.5 * ((tg - (L - sb)) / sb) ** 2)
            uc = ug[:, None] - (off[None, :] if self.bend != 0.0 else 0.0) + 0.4 * r
            ub = np.exp(-0.5 * (uc / max(r * 0.45, sig_u)) ** 2)
            strip += tip_pow * ub * tb[None, :]
        strip = strip.astype(np.float32)
        # strip (col, row) -> display: P0 + (tg0 + col) dc + (ug0 + row) nc
        org = P0 + tg[0] * dc + ug[0] * nc
        corners = np.array([org, org + tg[-1] * 0 + (tg[-1] - tg[0]) * dc, org + (ug[-1] - ug[0]) * nc,
                            org + (tg[-1] - tg[0]) * dc + (ug[-1] - ug[0]) * nc])
        xa, ya = np.floor(corners.min(0)).astype(int) - 1
        xb, yb = np.ceil(corners.max(0)).astype(int) + 2
        xa, ya, xb, yb = max(xa, 0), max(ya, 0), min(xb, W), min(yb, H)
        if xa >= xb or ya >= yb:
            pw_roi = ((0, 1, 0, 1), np.zeros((1, 1), np.float32))
        else:
            M = np.array([[dc[0], nc[0], org[0] - xa], [dc[1], nc[1], org[1] - ya]], np.float32)
            pw = cv2.warpAffine(strip, M, (xb - xa, yb - ya), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            pw_roi = ((ya, yb, xa, xb), pw)
        # faint acoustic shadow under the shaft, along the beam, to the bottom of the image
        far = 2.0 * max(H, W)
        b0 = np.array([float(v) for v in probe.beam_dir(P0[0], P0[1])])
        b1 = np.array([float(v) for v in probe.beam_dir(P1[0], P1[1])])
        poly = np.array([P0 + nc * r, P1 + nc * r, P1 + nc * r + far * b1, P0 + nc * r + far * b0])
        sxa = max(int(poly[:, 0].min()) - 4, 0)
        sxb = min(int(poly[:, 0].max()) + 5, W)
        sya = max(int(poly[:, 1].min()) - 4, 0)
        if sxa >= sxb or sya >= H:
            return pw_roi, ((0, 1, 0, 1), np.ones((1, 1), np.float32)), float(np.median(inc))
        sh = np.zeros((H - sya, sxb - sxa), np.uint8)
        q = np.round((poly - [sxa, sya]) * 4).astype(np.int32)
        cv2.fillPoly(sh, [q], 255, cv2.LINE_AA, shift=2)
        kk = max(int(self.psf.sigma_lat_focus_px * 2) | 1, 3)
        sh = cv2.blur(sh, (kk, kk))
        strength = self.shadow * float(elev_f.mean())
        shade = 1.0 - np.float32(strength / 255.0) * sh.astype(np.float32)
        return pw_roi, ((sya, H, sxa, sxb), shade), float(np.median(inc))


def simulate_sequence(n_frames: int, size=448, preset="clinical", seed=0, backgrounds=None, frame_step=None,
                      needle: str = "moving", moving_background=None):
    """Iterator over ``(frame_u8 HxW, mask_bool HxW, needle_dict)`` for one simulated sequence.

    ``size``: int or (H, W). ``preset``: "easy" | "clinical" | "hard" or a :class:`SimConfig`.
    ``backgrounds``: None (synthetic anatomy), a folder, or the list from :func:`load_backgrounds`.
    ``frame_step``: output every k-th source frame (25 fps); None draws it from the preset.
    ``needle``: "moving" (the insertion plan), "still" (the tip holds at its first position: drift tests) or
    "absent" (no needle ever enters: needle-free negatives with the same anatomy and motion).
    ``moving_background``: consecutive real frames (a list of uint8 images, or a list of such blocks, e.g.
    ``needletrack.data.splits.liver_frames("train")``): the needle is drawn over a window of them played back and
    forth; the sweep moves out of plane, so the needle leaves the plane and comes back as the probe sweeps.
    Deterministic given ``seed``; never touches global RNG state. The returned iterator has ``.meta``
    (the sequence's meta.json: fps, pixel spacing, ...).
    """
    return SequenceSimulator(n_frames, size=size, preset=preset, seed=seed, backgrounds=backgrounds,
                             frame_step=frame_step, needle=needle, moving_background=moving_background)
