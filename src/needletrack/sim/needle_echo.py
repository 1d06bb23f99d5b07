"""The needle's echo in a frame: front wall, back wall and lumen reverberations, tip, texture and shadow."""
from __future__ import annotations

import math

import cv2
import numpy as np

from needletrack.sim.needle import (
    cnr_to_power, cross_profile, incidence_deg, repeat_sigma, shaft_cnr, shallow_weight, soft_ends, tail_length,
    tip_cnr, tip_profile,
)

# log-normal texture of the needle's echoes (seventh pass): the needle's fixed speckle texture smoothed over
# TEX_MM along the shaft (and over about the axial resolution along the beam), standardized; the front wall, back
# wall and comet tail take it with these log-amplitudes (std of ln power)
TEX_MM = 0.6
TEX_FRONT, TEX_BACK, TEX_TAIL = 0.25, 0.55, 0.9
# the lumen's own echo (fluid: nearly anechoic) at a tenth of the drawn ``fill`` (0-0.04): at 0.04 it was 14 dB
# under the front wall, and with the walls it saturated into a solid bar as wide as the needle at high gain
LUMEN_FILL = 0.1
# the back wall at shallow incidence: 0.6x the drawn 0.1-0.4 (the wall and the lumen's fluid lose most of the pulse)
BACK_SCALE = 0.6
# the diffuse tail's e-folding length at most 0.2 mm: with a wide lumen (16 G, 12 px round trips) it glowed as
# a uniform band 2-3 mm deep under the shaft
TAIL_MAX_MM = 0.2
SIG_MIN_PX, SIG_MIN_RES = 1.1, 0.75


class NeedleEchoMixin:
    """SequenceSimulator method that renders the needle's echo power."""

    def _needle_texture(self):
        """The needle's fixed texture as a standardized Gaussian field (rows: across the shaft, columns: distance
        from the tip), smooth over ``TEX_MM`` along the shaft: made once per sequence from ``needle_tex`` (no
        random draws). Its pixel-scale Rician grain, one row per repeat, drew the old "ladder" as vertical dashes."""
        z = getattr(self, "_ntex_z", None)
        if z is None:
            lg = np.log(np.maximum(self.needle_tex, 1e-3)).astype(np.float32)
            st = max(TEX_MM / self.probe.sp, 3.0)
            su = max(2.0 * self.psf.sigma_ax_px, 2.0)
            z = cv2.GaussianBlur(lg, (0, 0), sigmaX=st, sigmaY=su, borderType=cv2.BORDER_REFLECT)
            z -= z.mean()
            z /= max(float(z.std()), 1e-6)
            self._ntex_z = z
        return z

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
        # (the PSF's covariance projected on the normal: the lateral resolution shows where the shaft is steep)
        sig_u = math.hypot(self.psf.sigma_ax_px * bdotn, self.psf.sigma_lat_focus_px * math.sqrt(max(1 - bdotn ** 2, 0)))
        # at least 1.1 px (FWHM 1.8 px) or 0.75 axial resolutions if less (the line stays within 2 of them), never
        # under 0.7 px: a thinner line, warped onto the pixel grid at a slant, beaded along the shaft every
        # 1/tan(angle) px as it crossed pixel rows (the peak pixel 1 to 0.6 of the line's power)
        sig_u = max(sig_u, min(SIG_MIN_PX, SIG_MIN_RES * self.psf.axial_res_px), 0.7)
        # at steep incidence there is no specular path: the front and back walls scatter alike (diffusely) and the
        # lumen's round trips no longer return to the probe (no comet tail)
        # (the back wall still fainter: the front wall and the lumen shade it)
        back = BACK_SCALE * self.back_wall * wsh + (0.2 + 0.5 * self.back_wall) * (1.0 - wsh)
        decay = self.reverb_decay * wsh
        r = self.width_px / 2
        spacing = max(self.id_px, 1.5)
        count = self.reverb_count
        t_k = (pts - P0) @ dc
        o_k = (pts - P0) @ nc
        omin, omax = float(min(o_k.min(), 0)), float(max(o_k.max(), 0))
        u_top = r + 3 * sig_u + 2 - omin
        u_bot = -r + (count + 1) * spacing + 3 * repeat_sigma(sig_u, spacing, self.tail_spread * wsh, count + 1) \
            + 2 + omax
        tail_max = TAIL_MAX_MM / probe.sp
        if count > 0 and self.tail_haze * wsh > 0:      # the diffuse tail, to 1e-4 of its start (40 dB)
            u_bot = max(u_bot, -r + spacing + 9.2 * min(tail_length(spacing, max(decay, 1e-3)), tail_max) + omax)
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
        # texture fixed on the needle (columns: distance from the tip), smooth over about a millimetre along the
        # shaft: a gentle one on the front wall, its own on the back wall, and a 2D one (rows: depth below the
        # strip's top) over the comet tail, so that the repeats differ from each other and from the walls
        z = self._needle_texture()
        th, tw_ = z.shape
        cols = np.clip((s_tip - (ss[idx[0]] + tg)).astype(int), 0, tw_ - 1)
        rows = np.clip((ug - ug[0]).astype(int), 0, th - 1)
        t_front = np.exp(TEX_FRONT * z[th - 1, cols] - 0.5 * TEX_FRONT ** 2)[None, :]
        t_back = np.exp(TEX_BACK * z[th // 2, cols] - 0.5 * TEX_BACK ** 2)[None, :]
        t_tail = np.exp(TEX_TAIL * z[rows[:, None], cols[None, :]] - 0.5 * TEX_TAIL ** 2)
        behind = None
        if tip_here and wsh > 0:
            # the bevel: the tube is cut obliquely, so the lumen and the back wall end along the cut (from the point,
            # on the front wall, back to the heel, one bevel length before it, on the back wall), the comet tail
            # (which needs both walls) at the heel, and only the front wall runs on to the point: the shaft ends
            # in a slanted line, not a blunt block (the specular regime, ``wsh``)
            t_end = L - self.bevel_px * np.clip((uu + r) / max(2.0 * r, 1e-6), 0.0, 1.0)
            behind = np.clip((t_end - tg[None, :]) / max(self.psf.sigma_lat_focus_px, 0.5) + 0.5, 0.0, 1.0)
            behind = wsh * behind + (1.0 - wsh)
        prof = cross_profile(uu, r, sig_u, spacing, decay, count, back, LUMEN_FILL * self.fill,
                             (t_front, t_back, t_tail), self.tail_spread * wsh, self.tail_haze * wsh, tail_max, behind)
        strip = prof * pw_t[None, :]
        if tip_pow > 0:
            # the bevel's echo: the bevel face (a third of its length, about one outer diameter, at the tip) blurred
            # by the PSF along the shaft (lateral resolution where the shaft runs across the beam, axial where it
            # runs along it), as wide as the bevel face across it. Sharp PSF edges, not a bevel-long Gaussian: the
            # Gaussian's tails, 40 dB up, glowed as a bright tube in the log display
            slat = math.sqrt(max(1 - bdotn ** 2, 0.0))
            sb = max(math.hypot(self.psf.sigma_lat_focus_px * bdotn, self.psf.sigma_ax_px * slat), 1.0)
            su = max(math.hypot(self.psf.sigma_ax_px * bdotn, self.psf.sigma_lat_focus_px * slat), 0.35 * r, 0.7)
            lb = max(self.bevel_px / 3, 1.0)
            tb = soft_ends(tg, L - lb, L, sb)
            uc = ug[:, None] - (off[None, :] if self.bend != 0.0 else 0.0) + 0.4 * r
            ub = np.exp(-(uc / su) ** 2)
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
