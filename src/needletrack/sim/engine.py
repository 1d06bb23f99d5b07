"""Sequence simulator: per-sequence precomputation, then cheap per-frame rendering.

Per sequence (this module): probe geometry, PSF, anatomy (or a real background: ``realbg``), two compounded
speckle realizations fixed to the tissue on the canvas, depth gain maps, the needle's parameters and the motion
over all source frames. Per output frame (``frame``): the probe pose, tissue drag and pulse give a resampling
map; the speckle fields are blended (out-of-plane decorrelation) and resampled; the needle's echo
(``needle_echo``) and shadow are added; electronic noise, TGC, log compression, the grey map and persistence
give the 8-bit frame; the mask is the shaft's in-plane visible extent at its physical width.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from needletrack.sim import bmode, scanner
from needletrack.sim.anatomy import breast
from needletrack.sim.bench import bench
from needletrack.sim.msk import muscle, nerve
from needletrack.sim.bmode import _u
from needletrack.sim.config import ANATOMIES, SimConfig, check_anatomy_mix, preset as get_preset
from needletrack.sim.frame import FrameMixin
from needletrack.sim.motion import make_motion, smooth_noise, view_travel
from needletrack.sim.needle import gauge_width_mm
from needletrack.sim.needle_echo import NeedleEchoMixin
from needletrack.sim.overlay import make_overlay
from needletrack.sim.realbg import RealBackgroundMixin, _as_backgrounds, _as_moving, real_probe

NEEDLE_MODES = ("moving", "still", "absent")


def pick_scene(cfg, aseed: int) -> str:
    """The sequence's scene: ``cfg.scene``, or for "mix" one of the anatomies drawn by ``cfg.anatomy_mix`` from a
    stream of its own (seeded from the anatomy's seed ``aseed``: the anatomy's own draws are the same whichever
    scene a mix would have picked)."""
    scene = getattr(cfg, "scene", "breast")
    if scene != "mix":
        return scene
    mix = check_anatomy_mix(getattr(cfg, "anatomy_mix", {"breast": 1.0}))
    w = np.array([mix[k] for k in ANATOMIES], float)
    u = float(np.random.default_rng([aseed & 0xFFFFFFFF, aseed >> 32, 17]).random())
    return ANATOMIES[min(int(np.searchsorted(np.cumsum(w) / w.sum(), u, side="right")), len(ANATOMIES) - 1)]


def _size(size):
    if isinstance(size, (tuple, list)):
        H, W = int(size[0]), int(size[1])
    else:
        H = W = int(size)
    if H < 32 or W < 32:
        raise ValueError(f"frame size must be at least 32x32, got {H}x{W}")
    return H, W


class SequenceSimulator(RealBackgroundMixin, FrameMixin, NeedleEchoMixin):
    """Iterator over ``(frame_u8, mask_bool, needle_dict)`` of one simulated sequence; ``.meta`` holds
    the sequence's meta.json content. Built by :func:`simulate_sequence`."""

    def __init__(self, n_frames: int, size=448, preset="clinical", seed=0, backgrounds=None, frame_step=None,
                 needle: str = "moving", moving_background=None, _margin_mm: float = 3.0, _tries: int = 0):
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
        mrng = frames = None
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
        if bg is None and _tries == 0:
            _margin_mm = self._planned_margin_mm(rng, cfg, H, W, step, _margin_mm)
        if bg is not None and not self.moving:   # a still real picture: shown whole, at its own scale
            probe = real_probe(rng, cfg, H, W, bg[0].shape, margin_mm=_margin_mm)
        else:
            probe = bmode.make_probe(rng, pcfg, H, W, margin_mm=_margin_mm)
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
        self.lut = scanner.grey_map(_u(rng, cfg.grey_curve), _u(rng, cfg.grey_floor))
        # edge enhancement (drawn from the frame stream: the sequence's other draws keep their values)
        self.sharpen = _u(self.frame_rng, cfg.edge_enhance)
        self.sharpen_px = max(max(H, W) / 448.0, 0.5)
        self.src_scale = 1.0               # canvas px -> field px (real backgrounds: the image's own pixels)
        if bg is None:
            tcx, tcy = self._setup_synthetic(rng, cfg, probe, psf, looks, line_px, gain_db, Hc, Wc, m, depth_px)
        else:
            tcx, tcy = self._setup_real(rng, mrng, bg, frames, cfg, psf, looks, gain_db, Hc, Wc, m, depth_px)
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
        art = getattr(self, "anatomy_info", {}).get("artery") if not self.real else None
        if art is not None:        # the scene has an artery: the pulse is centred on it (the draws above stay)
            self.pulse_c = self._canvas_to_world(art["cx"], art["cy"])
            self.pulse_r = max(self.pulse_r, 1.5 * art["r"])
        # the comet tail: each round trip spreads along the beam, over a diffuse textured tail (needle_echo)
        self.tail_spread = prng.uniform(0.3, 1.0)
        self.tail_haze = prng.uniform(0.05, 0.15)
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
        # the canvas covers the probe's travel (drift, moves, rocking, breathing, compression): beyond it the
        # warp would show the canvas mirrored at its edge (mirror-image anatomy). Synthetic scenes are set up
        # again from the same seed on a wider canvas; the draws that set the motion do not depend on its size
        # (anatomy and speckle have their own streams), so the travel is the same or close, a few tries at most
        if bg is None and _tries < 3:
            need = self._travel_mm() + 0.5
            if need > _margin_mm:
                self._resetups = getattr(self, "_resetups", 0) + 1
                self.__init__(n_frames, size, preset, seed, backgrounds, frame_step, needle, moving_background,
                              _margin_mm=max(1.2 * need, 1.5 * _margin_mm), _tries=_tries + 1)

    # ------------------------------------------------------------------------------------------------
    def _setup_synthetic(self, rng, cfg, probe, psf, looks, line_px, gain_db, Hc, Wc, m, depth_px):
        """Synthetic anatomy (breast, muscle, nerve or bench) under two compounded speckle realizations; returns the
        target (canvas px)."""
        # the anatomy draws from its own stream: changing it leaves the speckle, needle and motion draws alone
        aseed = int(rng.integers(2**62))
        arng = np.random.default_rng(aseed)
        kind = pick_scene(cfg, aseed)
        scene = {"bench": bench, "breast": breast, "muscle": muscle, "nerve": nerve}[kind]
        anat = scene(arng, cfg, (Hc, Wc), probe.sp, m, depth_px,
                      atten_db_mm=2 * psf.atten_db_cm_mhz * psf.freq_mhz / 10.0)
        self.scene = kind
        self.anatomy_info = anat.info
        # the speckle draws from its own stream too (their number grows with the canvas, see the margin below)
        S = scanner.speckle_intensity(np.random.default_rng(int(rng.integers(2**62))), (Hc, Wc), psf, m, looks, 1, line_px)
        # the speckle-reduction strength comes from the frame stream (the sequence's other draws keep their values)
        S[0] = scanner.speckle_reduction(S[0], psf, _u(self.frame_rng, cfg.speckle_reduction))
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
                       else f"needletrack.sim (synthetic {kind})")
        self.alpha = 0.0
        return tcx, tcy

    def _planned_margin_mm(self, rng, cfg, H, W, step, base):
        """Canvas margin (mm) for the probe moves, breathing and compression this sequence will have: make_motion
        draws them from the first child stream of ``rng``, which is known now; the slow drift (drawn later) is
        allowed for by its preset bounds, scaled down for clips shorter than its 2.5 s (_travel_mm checks the
        whole motion after and sets up again on a wider canvas when it does not fit)."""
        ss = rng.bit_generator.seed_seq
        child = np.random.default_rng(np.random.SeedSequence(ss.entropy, spawn_key=tuple(ss.spawn_key) + (
            ss.n_children_spawned,)))
        n_src = (self.n - 1) * step + 1
        shift, rock = view_travel(child, cfg, n_src, cfg.fps)
        half = 0.5 * float(cfg.depth_mm[1]) * max(W / H, 1.0)
        # the slow drift wanders over its range in a few seconds (knots 0.8-2.5 s): a short clip moves less
        f = min(1.0, n_src / cfg.fps / 2.5)
        drift, rot = f * float(cfg.probe_drift_mm[1]), f * float(cfg.probe_rot_deg[1])
        return max(base, 0.5 + shift + drift + half * math.sin(math.radians(rock + rot)))

    def _travel_mm(self) -> float:
        """How far (mm) the view moves over the tissue at most: probe and breathing shifts, the rocking's reach at
        the frame's edge, the compression's reach at its bottom."""
        mo = self.motion
        xy = mo.probe_xy + (mo.tissue_xy if mo.tissue_xy is not None else 0.0)
        half = 0.5 * max(self.H, self.W) * self.probe.sp
        rot = half * float(np.sin(np.radians(np.abs(mo.probe_deg))).max(initial=0.0))
        comp = float(np.max(mo.compress, initial=0.0)) if mo.compress is not None else 0.0
        return float(np.abs(xy).max(initial=0.0)) + rot + comp

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
