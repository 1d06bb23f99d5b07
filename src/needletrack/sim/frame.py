"""Per-frame rendering of the sequence simulator: probe pose, needle geometry and ground truth, tissue
resampling with drag and pulse, noise, log compression, grey map and persistence."""
from __future__ import annotations

import math

import cv2
import numpy as np

from needletrack.geometry import line_mask
from needletrack.sim.needle import longest_run, soft_ends

_GRIDS: dict = {}


def _grid(H, W):
    key = (H, W)
    if key not in _GRIDS:
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        _GRIDS[key] = (xx, yy)
    return _GRIDS[key]


class FrameMixin:
    """SequenceSimulator methods that render one output frame."""

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
        if self.sharpen > 0:     # the scanner's edge enhancement: an unsharp mask of about a pixel
            frame = cv2.addWeighted(frame, 1.0 + self.sharpen, cv2.GaussianBlur(frame, (0, 0), self.sharpen_px),
                                    -self.sharpen, 0.0)
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
