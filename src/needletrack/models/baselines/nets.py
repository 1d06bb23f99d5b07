"""The six per-frame segmenters of the paper's Table 4, each ``logit = model(image)``.

| arch         | after                                   | encoder                         | decoder                          |
|--------------|-----------------------------------------|---------------------------------|----------------------------------|
| unet         | Ronneberger et al. 2015                 | 4× (2 conv, pool), widths b..16b | up-conv ×2, concat skip, 2 conv  |
| fcn32        | Long et al. 2015 (FCN-32s)              | VGG16 (BN) + conv fc6/fc7       | 1×1 score, ×32 learned upsample  |
| segnet       | Badrinarayanan et al. 2017              | VGG16 (BN), pool indices kept   | max-unpool + mirrored convs      |
| pspnet       | Zhao et al. 2017                        | dilated ResNet50, stride 8      | pyramid pooling (1,2,3,6) + conv |
| vgg16_unet   | U-Net with a VGG16 encoder              | VGG16 (BN), 5 skips + centre    | U-Net decoder                    |
| resnet50_fcn32 | FCN-32s head on ResNet50              | ResNet50, stride 32             | conv head, ×32 learned upsample  |

Parameters (``params`` dict, from the preset/config): ``width_mult`` scales every channel width (1.0 is the
published network), ``base`` (UNet / ResNet stem width), ``fc_dim`` (FCN fc6/fc7 width, 4096 published),
``resnet_depth`` (50 published), ``dropout``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from needletrack.models.baselines.common import (
    BaselineNet,
    ResNetEncoder,
    VGG16Encoder,
    VGG16_LAYOUT,
    bilinear_deconv,
    conv_bn_relu,
    scaled,
)
from needletrack.models.baselines.presets import preset_extra


def _double_conv(cin, cout):
    return nn.Sequential(conv_bn_relu(cin, cout), conv_bn_relu(cout, cout))


class UNet(BaselineNet):
    """U-Net: four 2×2 max-pool levels, (3×3 conv+BN+ReLU)×2 per level, transposed-conv upsampling,
    concatenated skips, 1×1 output conv. Widths base·(1,2,4,8,16) (base 64 published)."""

    def __init__(self, cfg, params):
        super().__init__(cfg, params)
        b = int(params.get("base", 64))
        w = [b, 2 * b, 4 * b, 8 * b, 16 * b]
        self.downs = nn.ModuleList([_double_conv(1, w[0])] + [_double_conv(w[i - 1], w[i]) for i in range(1, 5)])
        self.ups = nn.ModuleList([nn.ConvTranspose2d(w[i], w[i - 1], 2, stride=2) for i in range(4, 0, -1)])
        self.dec = nn.ModuleList([_double_conv(2 * w[i - 1], w[i - 1]) for i in range(4, 0, -1)])
        self.head = nn.Conv2d(w[0], 1, 1)
        self._init_weights()

    def forward(self, image):
        x = self._normalise(image)
        skips = []
        for i, d in enumerate(self.downs):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = d(x)
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.ups, self.dec):
            x = up(x)
            x = dec(torch.cat([x, skips.pop()], dim=1))
        return self._to_size(self.head(x), image.shape[-2:])


class FCN32(BaselineNet):
    """FCN-32s: VGG16 (with BN) → fc6 (k×k conv, ``fc_dim``) → fc7 (1×1) → 1×1 score at stride 32 →
    learned ×32 upsampling initialised bilinear. fc6's kernel is 7 in the paper; we use 3 with padding so
    small inputs (stride-32 maps of 4×4) keep their size."""

    def __init__(self, cfg, params):
        super().__init__(cfg, params)
        self.encoder = VGG16Encoder(1, float(params.get("width_mult", 1.0)))
        fc = int(params.get("fc_dim", 4096))
        k = int(params.get("fc6_kernel", 3))
        p = float(params.get("dropout", 0.5))
        self.fc = nn.Sequential(
            nn.Conv2d(self.encoder.widths[-1], fc, k, padding=k // 2), nn.ReLU(inplace=True), nn.Dropout2d(p),
            nn.Conv2d(fc, fc, 1), nn.ReLU(inplace=True), nn.Dropout2d(p),
        )
        self.score = nn.Conv2d(fc, 1, 1)
        self.up = bilinear_deconv(1, 32)
        self._init_weights()

    def forward(self, image):
        x = self.encoder(self._normalise(image))[-1]
        x = F.max_pool2d(x, 2)  # pool5: stride 32
        return self._to_size(self.up(self.score(self.fc(x))), image.shape[-2:])


class SegNet(BaselineNet):
    """SegNet: VGG16 encoder (BN) whose max-pool indices drive max-unpooling in a mirrored decoder
    (3,3,3,2,2 convs per decoder block), 3×3 conv to one logit at the end."""

    def __init__(self, cfg, params):
        super().__init__(cfg, params)
        self.encoder = VGG16Encoder(1, float(params.get("width_mult", 1.0)))
        w = self.encoder.widths
        dec = []
        # decoder block i mirrors encoder block i (from the deepest); its last conv maps to the next width
        for i in range(4, -1, -1):
            n = VGG16_LAYOUT[i]
            cout = w[i - 1] if i > 0 else w[0]
            layers = [conv_bn_relu(w[i], w[i]) for _ in range(n - 1)] + [conv_bn_relu(w[i], cout)]
            dec.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(dec)
        self.head = nn.Conv2d(w[0], 1, 3, padding=1)
        self._init_weights()

    def forward(self, image):
        x = self._normalise(image)
        indices, sizes = [], []
        for blk in self.encoder.blocks:
            x = blk(x)
            sizes.append(x.shape[-2:])
            x, idx = F.max_pool2d(x, 2, return_indices=True)
            indices.append(idx)
        for dec in self.decoder:
            x = F.max_unpool2d(x, indices.pop(), 2, output_size=sizes.pop())
            x = dec(x)
        return self._to_size(self.head(x), image.shape[-2:])


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module: average-pool to b×b for each bin, 1×1 conv to C/len(bins), upsample,
    concatenate with the input. The pooled branches use a bias instead of BN (a 1×1 map with batch 1 has
    no batch statistics)."""

    def __init__(self, cin: int, bins=(1, 2, 3, 6)):
        super().__init__()
        self.bins = tuple(bins)
        red = max(1, cin // len(self.bins))
        self.branches = nn.ModuleList([nn.Sequential(nn.Conv2d(cin, red, 1), nn.ReLU(inplace=True))
                                       for _ in self.bins])
        self.out_channels = cin + red * len(self.bins)

    def forward(self, x):
        h, w = x.shape[-2:]
        outs = [x]
        for b, br in zip(self.bins, self.branches):
            y = br(F.adaptive_avg_pool2d(x, b))
            outs.append(F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False))
        return torch.cat(outs, dim=1)


class PSPNet(BaselineNet):
    """PSPNet: dilated ResNet (50 published, output stride 8) → pyramid pooling (bins 1,2,3,6) → 3×3 conv
    (512·width_mult) + BN + ReLU + dropout → 1×1 logit → bilinear to input size. (The auxiliary loss of
    the paper is left out: one training pipeline, one loss, for every row.)"""

    def __init__(self, cfg, params):
        super().__init__(cfg, params)
        base = int(params.get("base", 64))
        self.backbone = ResNetEncoder(int(params.get("resnet_depth", 50)), 1, base,
                                      int(params.get("output_stride", 8)))
        cin = self.backbone.out_channels[-1]
        self.ppm = PyramidPooling(cin, params.get("bins", (1, 2, 3, 6)))
        mid = max(4, base * 8)
        self.head = nn.Sequential(conv_bn_relu(self.ppm.out_channels, mid), nn.Dropout2d(float(params.get("dropout", 0.1))),
                                  nn.Conv2d(mid, 1, 1))
        self._init_weights()

    def forward(self, image):
        x = self.backbone(self._normalise(image))[-1]
        return self._to_size(self.head(self.ppm(x)), image.shape[-2:])


class VGG16UNet(BaselineNet):
    """U-Net whose encoder is VGG16 (BN): skips from the five blocks (strides 1..16), a centre double conv
    after pool5 (stride 32), and five decoder stages (×2 bilinear upsample, concat, double conv)."""

    def __init__(self, cfg, params):
        super().__init__(cfg, params)
        self.encoder = VGG16Encoder(1, float(params.get("width_mult", 1.0)))
        w = self.encoder.widths
        self.centre = _double_conv(w[4], w[4])
        dec, cin = [], w[4]
        dec_widths = [w[4], w[3], w[2], w[1], w[0]]
        for skip_w, cout in zip(reversed(w), dec_widths):
            dec.append(_double_conv(cin + skip_w, cout))
            cin = cout
        self.decoder = nn.ModuleList(dec)
        self.head = nn.Conv2d(w[0], 1, 1)
        self._init_weights()

    def forward(self, image):
        skips = self.encoder(self._normalise(image))
        x = self.centre(F.max_pool2d(skips[-1], 2))
        for dec in self.decoder:
            s = skips.pop()
            x = F.interpolate(x, size=s.shape[-2:], mode="bilinear", align_corners=False)
            x = dec(torch.cat([x, s], dim=1))
        return self._to_size(self.head(x), image.shape[-2:])


class ResNetFCN32(BaselineNet):
    """FCN-32s on a ResNet (50 published) backbone at stride 32: 3×3 conv (512·width) + BN + ReLU +
    dropout → 1×1 logit → learned ×32 upsampling initialised bilinear."""

    def __init__(self, cfg, params):
        super().__init__(cfg, params)
        base = int(params.get("base", 64))
        self.backbone = ResNetEncoder(int(params.get("resnet_depth", 50)), 1, base, 32)
        mid = max(4, base * 8)
        self.head = nn.Sequential(conv_bn_relu(self.backbone.out_channels[-1], mid),
                                  nn.Dropout2d(float(params.get("dropout", 0.1))), nn.Conv2d(mid, 1, 1))
        self.up = bilinear_deconv(1, 32)
        self._init_weights()

    def forward(self, image):
        x = self.backbone(self._normalise(image))[-1]
        return self._to_size(self.up(self.head(x)), image.shape[-2:])


ARCHS: dict[str, type[BaselineNet]] = {
    "unet": UNet,
    "fcn32": FCN32,
    "segnet": SegNet,
    "pspnet": PSPNet,
    "vgg16_unet": VGG16UNet,
    "resnet50_fcn32": ResNetFCN32,
}

def preset_params(arch: str, scale: str = "paper") -> dict:
    """The ``extra`` of the registered preset at ``scale`` ("paper", "quick", "tiny")."""
    if arch not in ARCHS:
        raise KeyError(arch)
    return preset_extra(arch, scale)


def build(arch: str, params: dict | None = None, cfg=None) -> BaselineNet:
    if arch not in ARCHS:
        raise KeyError(f"unknown baseline arch {arch!r}; known: {', '.join(ARCHS)}")
    return ARCHS[arch](cfg, dict(params or {}))
