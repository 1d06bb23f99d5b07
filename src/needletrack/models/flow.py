"""Flow regression (DICL-style learned matching cost) and MAFFM, on stride-16 query features.

For every displacement u in a U×U window the matching network M scores the pair (F_t(p), F_{t−1}(p+u)):
conv3x3 → BN → ReLU → strided conv3x3 → BN → ReLU → deconv back to one channel. Stacking the D = U²
scores gives a B×D×h×w cost volume, reweighted by a 1×1 conv over displacements, then encoded into
motion features. MAFFM: F'_t = F_t · sigmoid(conv1x1(motion)) + F_t (a one-channel gate, broadcast).

Memory: M's first conv is linear in its input, so conv([F_t; S_u F_{t−1}]) = conv_a(F_t) + S_u conv_b(F_{t−1})
where S_u is a shift. Both convs run once per frame pair; each displacement only costs a slice and an
add. The rest of M runs on chunks of displacements stacked in the batch (``chunk`` per pass), so at most
``chunk`` copies of an h×w×match_dim map exist at once. All slices are static: it exports to ONNX.
Displacement order: row-major over (dy, dx), dy and dx from −R to R (R = (U−1)/2); index R·U + R is zero.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


def displacements(window: int) -> list[tuple[int, int]]:
    r = (window - 1) // 2
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]


class FlowRegression(nn.Module):
    """``forward(raw_t, raw_prev) -> (cost B×D×h×w, motion B×motion_dim×h×w)``; ``project(f16) -> raw16``."""

    def __init__(self, feat_ch: int, window: int = 9, dim: int = 64, match_dim: int = 64, motion_dim: int = 64,
                 chunk: int = 0):
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"flow window must be odd, got {window}")
        self.window, self.radius = window, (window - 1) // 2
        self.n_disp = window * window
        self.chunk = chunk
        self.proj = nn.Sequential(nn.Conv2d(feat_ch, dim, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(inplace=True))
        # matching network M (first layer split into the F_t half and the F_{t-1} half)
        self.m1_a = nn.Conv2d(dim, match_dim, 3, 1, 1, bias=True)
        self.m1_b = nn.Conv2d(dim, match_dim, 3, 1, 0, bias=False)  # applied to the padded F_{t-1}
        self.m1_post = nn.Sequential(nn.BatchNorm2d(match_dim), nn.ReLU(inplace=True))
        self.m2 = nn.Sequential(nn.Conv2d(match_dim, match_dim, 3, 2, 1, bias=False), nn.BatchNorm2d(match_dim),
                                nn.ReLU(inplace=True))
        self.m3 = nn.ConvTranspose2d(match_dim, 1, 4, 2, 1)
        self.reweight = nn.Conv2d(self.n_disp, self.n_disp, 1)  # 1×1 reweighting over displacements
        self.motion = nn.Sequential(nn.Conv2d(self.n_disp, motion_dim, 3, 1, 1), nn.ReLU(inplace=True),
                                    nn.Conv2d(motion_dim, motion_dim, 3, 1, 1), nn.ReLU(inplace=True))

    def project(self, f16: torch.Tensor) -> torch.Tensor:
        """Matching features of one frame (``raw16``), computed once and reused as the next frame's prev."""
        return self.proj(f16)

    def _chunk_size(self, b, c, h, w) -> int:
        if self.chunk > 0:
            return min(self.chunk, self.n_disp)
        budget = 1 << 22  # floats per pass (16 MB)
        return max(1, min(self.n_disp, budget // max(1, b * c * h * w)))

    def matching_cost(self, raw_t: torch.Tensor, raw_prev: torch.Tensor) -> torch.Tensor:
        """Raw matching scores B×D×h×w (before the 1×1 reweighting)."""
        b, _, h, w = raw_t.shape
        r = self.radius
        a = self.m1_a(raw_t)  # B×C×h×w
        pb = self.m1_b(F.pad(raw_prev, (r + 1, r + 1, r + 1, r + 1)))  # B×C×(h+2r)×(w+2r)
        c = a.shape[1]
        disp = displacements(self.window)
        n = self._chunk_size(b, c, h, w)
        out = []
        for s in range(0, len(disp), n):
            part = disp[s:s + n]
            shifted = torch.stack([pb[:, :, r + dy:r + dy + h, r + dx:r + dx + w] for dy, dx in part], 1)
            x = (a.unsqueeze(1) + shifted).reshape(b * len(part), c, h, w)
            x = self.m3(self.m2(self.m1_post(x)))  # (B·d)×1×h×w
            out.append(x.reshape(b, len(part), h, w))
        return out[0] if len(out) == 1 else torch.cat(out, 1)

    def forward(self, raw_t: torch.Tensor, raw_prev: torch.Tensor):
        cost = self.reweight(self.matching_cost(raw_t, raw_prev))
        return cost, self.motion(cost)


class MAFFM(nn.Module):
    """Motion-attention feature fusion: F' = F · sigmoid(conv1x1(motion)) + F (one-channel gate)."""

    def __init__(self, motion_dim: int):
        super().__init__()
        self.gate = nn.Conv2d(motion_dim, 1, 1)

    def attention(self, motion: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(motion))

    @staticmethod
    def fuse(feat: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        if att.shape[-2:] != feat.shape[-2:]:
            att = F.interpolate(att, size=feat.shape[-2:], mode="bilinear", align_corners=False)
        return feat * att + feat

    def forward(self, feat: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        return self.fuse(feat, self.attention(motion))
