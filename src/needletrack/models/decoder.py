"""STCN's decoder: readout ⊕ query value features → residual block → upsample with stride-8 and stride-4
skips → one-channel logit → bilinear ×4 to the input size."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from needletrack.models.resnet import ResBlock


class UpsampleBlock(nn.Module):
    def __init__(self, skip_ch: int, up_ch: int, out_ch: int):
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_ch, up_ch, 3, 1, 1)
        self.out = ResBlock(up_ch, out_ch)

    def forward(self, skip, up):
        x = self.skip_conv(skip) + F.interpolate(up, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out(x)


class Decoder(nn.Module):
    """``forward(readout, f16, f8, f4) -> logit`` B×1×(4·h4)×(4·w4)."""

    def __init__(self, value_dim: int, c16: int, c8: int, c4: int, dims=(512, 256, 256)):
        super().__init__()
        d16, d8, d4 = dims
        self.key_comp = nn.Conv2d(c16, value_dim, 3, 1, 1)  # query "value" features from the key encoder
        self.compress = ResBlock(2 * value_dim, d16)
        self.up_16_8 = UpsampleBlock(c8, d16, d8)
        self.up_8_4 = UpsampleBlock(c4, d8, d4)
        self.pred = nn.Conv2d(d4, 1, 3, 1, 1)

    def forward(self, readout, f16, f8, f4):
        x = self.compress(torch.cat([readout, self.key_comp(f16)], 1))
        x = self.up_16_8(f8, x)
        x = self.up_8_4(f4, x)
        x = self.pred(F.relu(x))
        return F.interpolate(x, scale_factor=4.0, mode="bilinear", align_corners=False)
