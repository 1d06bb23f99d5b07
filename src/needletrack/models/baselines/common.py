"""Shared pieces of the per-frame baselines: conv blocks, the base class, the VGG16 and ResNet backbones.

Everything here is written from the published descriptions (Simonyan & Zisserman 2015 for VGG16,
He et al. 2016 for ResNet, Yu & Koltun 2016 for dilation); nothing is loaded from the internet and every
model starts from random weights. Normalisation layers are BatchNorm throughout (the paper's baselines
start from ImageNet weights; we train from scratch, where VGG without BN trains poorly, so VGG blocks have
BN here and say so in their docstrings).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from needletrack.models.resnet import BasicBlock, Bottleneck  # shared with the memory models

VGG16_LAYOUT = (2, 2, 3, 3, 3)          # convs per block
VGG16_WIDTHS = (64, 128, 256, 512, 512)  # channels per block at width multiplier 1
PRIOR_LOGIT = -3.9                       # log(0.02 / 0.98): the initial needle probability of every pixel


def scaled(widths: Sequence[int], mult: float, minimum: int = 2) -> list[int]:
    """Channel widths times ``mult`` (rounded, at least ``minimum``)."""
    return [max(minimum, int(round(w * mult))) for w in widths]


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def bilinear_deconv(channels: int, factor: int) -> nn.ConvTranspose2d:
    """A learnable ×``factor`` upsampling (FCN's 'deconvolution'), initialised to bilinear interpolation."""
    k = 2 * factor
    up = nn.ConvTranspose2d(channels, channels, k, stride=factor, padding=factor // 2, bias=False)
    centre = (k - 1) / 2.0
    og = torch.arange(k, dtype=torch.float32)
    filt1d = 1 - (og - centre).abs() / factor
    filt = filt1d[:, None] * filt1d[None, :]
    with torch.no_grad():
        up.weight.zero_()
        for c in range(channels):
            up.weight[c, c] = filt
    return up


class BaselineNet(nn.Module):
    """Base class of the per-frame segmenters: ``logit = model(image)``.

    ``image``: B×1×H×W float in [0, 1] (H, W divisible by 32); the model normalises it internally with the
    fixed ``norm_mean``/``norm_std`` of its config. Returns B×1×H×W logits at the input size.
    """

    is_memory_model = False
    stride_multiple = 32

    def __init__(self, cfg, params: dict):
        super().__init__()
        self.cfg = cfg
        self.params = dict(params)
        self.norm_mean = float(params.get("norm_mean", 0.25))
        self.norm_std = float(params.get("norm_std", 0.25))

    def _normalise(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4 or image.shape[1] != 1:
            raise ValueError(f"{type(self).__name__} expects B×1×H×W images, got shape {tuple(image.shape)}")
        return (image - self.norm_mean) / self.norm_std

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # pragma: no cover - subclasses override
        raise NotImplementedError

    def _init_weights(self) -> None:
        """He (fan-out) init for convs, unit BN (except residual-branch BNs marked ``zero_init``); learned
        upsampling layers keep their own (bilinear) init. Called by every subclass at the end of __init__."""
        for m in self.modules():
            if type(m) is nn.Conv2d:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 0.0 if getattr(m, "zero_init", False) else 1.0)
                nn.init.zeros_(m.bias)
        # The logit layers (one output channel): He fan-out init would give them std sqrt(2) per weight, i.e.
        # logits of several units at the start and a BCE that first has to undo them. Start them small, with
        # the bias at the needle's prior instead (a needle covers ~2 % of a frame; as in RetinaNet's heads).
        for m in self.modules():
            if type(m) is nn.Conv2d and m.out_channels == 1:
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.constant_(m.bias, PRIOR_LOGIT)

    @staticmethod
    def _to_size(logit: torch.Tensor, size) -> torch.Tensor:
        if tuple(logit.shape[-2:]) != tuple(size):
            logit = F.interpolate(logit, size=tuple(size), mode="bilinear", align_corners=False)
        return logit


# ---------------------------------------------------------------------------------------------- VGG16
class VGGBlock(nn.Module):
    """One VGG block: ``n`` 3×3 conv+BN+ReLU (pooling is left to the caller, which may need the indices)."""

    def __init__(self, cin: int, cout: int, n: int):
        super().__init__()
        layers = [conv_bn_relu(cin, cout)]
        layers += [conv_bn_relu(cout, cout) for _ in range(n - 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


class VGG16Encoder(nn.Module):
    """VGG16's 13 conv layers in five blocks (2,2,3,3,3), with BN. ``forward`` returns the output of every
    block *before* its max-pool (strides 1, 2, 4, 8, 16); callers pool themselves."""

    def __init__(self, in_ch: int = 1, width_mult: float = 1.0):
        super().__init__()
        self.widths = scaled(VGG16_WIDTHS, width_mult)
        blocks, cin = [], in_ch
        for n, w in zip(VGG16_LAYOUT, self.widths):
            blocks.append(VGGBlock(cin, w, n))
            cin = w
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x) -> list[torch.Tensor]:
        feats = []
        for i, blk in enumerate(self.blocks):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = blk(x)
            feats.append(x)
        return feats


# ---------------------------------------------------------------------------------------------- ResNet
RESNET_LAYERS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3)),
                 101: (Bottleneck, (3, 4, 23, 3))}


class ResNetEncoder(nn.Module):
    """ResNet-``depth`` (18/34/50/101) on a 1-channel input.

    ``base`` is the stem width (64 in the paper's ResNet). ``output_stride`` 32 is the classification
    network; 8 or 16 replace the strides of the last stages by dilation (PSPNet/DeepLab style).
    ``forward`` returns the four stage outputs (strides 4, 8, 16, 32 at output_stride 32).
    """

    def __init__(self, depth: int = 50, in_ch: int = 1, base: int = 64, output_stride: int = 32):
        super().__init__()
        if depth not in RESNET_LAYERS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYERS)}, got {depth}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        block, layers = RESNET_LAYERS[depth]
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, base, 7, 2, 3, bias=False), nn.BatchNorm2d(base), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        strides = [1, 2, 2, 2]
        dilations = [1, 1, 1, 1]
        if output_stride <= 16:
            strides[3], dilations[3] = 1, 2
        if output_stride == 8:
            strides[2], dilations[2], dilations[3] = 1, 2, 4
        self.cin = base
        self.stages = nn.ModuleList()
        for i, n in enumerate(layers):
            planes = base * (2 ** i)
            blocks = []
            for j in range(n):
                blocks.append(block(self.cin, planes, strides[i] if j == 0 else 1, dilations[i]))
                self.cin = planes * block.expansion
            self.stages.append(nn.Sequential(*blocks))
        self.out_channels = [base * (2 ** i) * block.expansion for i in range(4)]

    def forward(self, x) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for st in self.stages:
            x = st(x)
            feats.append(x)
        return feats
