"""ResNet encoders (own code, no torchvision): STCN's ResNet50 key encoder and ResNet18 value encoder.

Both stop at layer3 (stride 16), as in STCN. Widths are parameterised (``base`` = stem / layer1 width)
so fast and tiny presets can narrow them; base 64 gives the published ResNet18/50 layouts.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


def conv3x3(cin, cout, stride=1, dilation=1):
    return nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False)


def shortcut(cin, cout, stride):
    """The residual path's projection (1×1 conv + BN) when the block changes width or stride, else None."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """ResNet18/34 block; ``dilation`` > 1 for the dilated stages of the baselines' PSPNet/DeepLab trunks."""

    expansion = 1

    def __init__(self, cin, planes, stride=1, dilation=1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = conv3x3(cin, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.down = shortcut(cin, cout, stride)

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + idt, inplace=True)


class Bottleneck(nn.Module):
    """ResNet50/101 block (v1.5: stride on the 3×3, as torchvision)."""

    expansion = 4

    def __init__(self, cin, planes, stride=1, dilation=1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        # read only by the baselines' _init_weights (residual branch starts as identity there);
        # the memory models keep torch's default init
        self.bn3.zero_init = True
        self.down = shortcut(cin, cout, stride)

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = F.relu(self.bn2(self.conv2(y)), inplace=True)
        y = self.bn3(self.conv3(y))
        return F.relu(y + idt, inplace=True)


_LAYOUTS = {"resnet18": (BasicBlock, (2, 2, 2)), "resnet34": (BasicBlock, (3, 4, 6)),
            "resnet50": (Bottleneck, (3, 4, 6))}


class ResNetEncoder(nn.Module):
    """ResNet up to layer3. ``forward(x) -> (f4, f8, f16)`` at strides 4, 8, 16.

    ``widths`` are the planes of the stem/layer1, layer2, layer3 (channels out = planes × expansion).
    """

    def __init__(self, in_ch: int, block=BasicBlock, blocks=(2, 2, 2), widths=(64, 128, 256)):
        super().__init__()
        w0 = widths[0]
        self.conv1 = nn.Conv2d(in_ch, w0, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w0)
        self.pool = nn.MaxPool2d(3, 2, 1)
        cin = w0
        layers = []
        for i, (n, planes) in enumerate(zip(blocks, widths)):
            mods = []
            for j in range(n):
                mods.append(block(cin, planes, stride=2 if (j == 0 and i > 0) else 1))
                cin = planes * block.expansion
            layers.append(nn.Sequential(*mods))
        self.layer1, self.layer2, self.layer3 = layers
        self.channels = tuple(p * block.expansion for p in widths)  # (c4, c8, c16)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        f4 = self.layer1(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f4, f8, f16


def resnet_encoder(kind: str, in_ch: int, base: int = 64, blocks=None, widths=None) -> ResNetEncoder:
    """A named ResNet trunk: ``kind`` in resnet18/34/50; ``base`` scales widths (base, 2·base, 4·base)."""
    block, default_blocks = _LAYOUTS[kind]
    return ResNetEncoder(in_ch, block, tuple(blocks or default_blocks), tuple(widths or (base, 2 * base, 4 * base)))


class ResBlock(nn.Module):
    """STCN's pre-activation residual block (no norm), with a 1×1 projection when widths differ."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = None if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        r = self.conv1(F.relu(x))
        r = self.conv2(F.relu(r))
        return (x if self.skip is None else self.skip(x)) + r


class ChannelSpatialAttention(nn.Module):
    """A light CBAM (channel then spatial attention), as in STCN's value fusion."""

    def __init__(self, ch, reduction=16):
        super().__init__()
        hid = max(ch // reduction, 4)
        self.mlp = nn.Sequential(nn.Conv2d(ch, hid, 1), nn.ReLU(inplace=True), nn.Conv2d(hid, ch, 1))
        self.spatial = nn.Conv2d(2, 1, 7, 1, 3)

    def forward(self, x):
        ca = torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))
        x = x * ca
        sa = torch.sigmoid(self.spatial(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
        return x * sa


class ValueEncoder(nn.Module):
    """STCN's memory encoder: ResNet18 on (image, mask) to stride 16, fused with the key encoder's f16.

    ``forward(image_norm, mask, key_f16) -> value`` B×value_dim×H/16×W/16.
    """

    def __init__(self, key_f16_ch: int, value_dim: int = 512, widths=(64, 128, 256), blocks=(2, 2, 2),
                 kind: str = "resnet18"):
        super().__init__()
        block = _LAYOUTS[kind][0] if kind in _LAYOUTS else BasicBlock
        self.trunk = ResNetEncoder(2, block, tuple(blocks), tuple(widths))
        c16 = self.trunk.channels[2]
        self.block1 = ResBlock(c16 + key_f16_ch, value_dim)
        self.attention = ChannelSpatialAttention(value_dim)
        self.block2 = ResBlock(value_dim, value_dim)

    def forward(self, image, mask, key_f16):
        x = torch.cat([image, mask], 1)
        _, _, v16 = self.trunk(x)
        x = self.block1(torch.cat([v16, key_f16], 1))
        x = self.block2(x + self.attention(x))
        return x
