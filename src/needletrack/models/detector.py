"""The learned single-frame needle detector: where is a needle in this one frame, with no prompt and no memory.

Tracker v2's training-free line detector (:mod:`needletrack.track.autoinit`) proposes simulator v3's faint
needle in about a third of its frames (docs/tracker.md), and the tracking network cannot start without a
prompt. This small encoder-decoder is trained on single frames of the harness's train splits only (simulated
needles over synthetic tissue, real backgrounds and liver-sweep windows; needle-free simulated and real frames
with empty masks): ``scripts/train_detector.py configs/detector/train.yaml``.

Input: one grey frame letterboxed to ``input_size`` (a float in [0, 1], 1×1×S×S), and with ``in_channels=2`` its
change since the stream's previous frame (``MOTION_GAIN × (frame - previous)``, 0 on a stream's first frame) as a
second channel: a needle being pushed in moves along its axis while the tissue around it holds. Output: needle
logits at half that resolution (1×1×S/2×S/2). About 0.26 M parameters; the runtime is
:mod:`needletrack.track.detector`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
import torch.nn.functional as F


MOTION_GAIN = 2.0


def detector_input(frame: torch.Tensor, prev: torch.Tensor | None, in_channels: int) -> torch.Tensor:
    """The network's input from B×1×S×S frames in [0, 1] (``prev``: the previous frames, or None)."""
    if in_channels == 1:
        return frame
    diff = torch.zeros_like(frame) if prev is None else MOTION_GAIN * (frame - prev)
    return torch.cat([frame, diff], dim=1)


@dataclass
class DetectorConfig:
    input_size: int = 256
    widths: tuple = (16, 24, 32, 48, 64)   # stem (1/2), then 1/4 ... 1/16
    in_channels: int = 1                   # 1: the frame; 2: the frame and its change since the previous frame


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class NeedleDetectorNet(nn.Module):
    """A small U-Net: a stride-2 stem, three stride-2 stages, a dilated context block, and a decoder back to
    half resolution with skip connections (module doc)."""

    is_memory_model = False

    def __init__(self, cfg: DetectorConfig | None = None):
        super().__init__()
        self.cfg = cfg or DetectorConfig()
        w = tuple(self.cfg.widths)
        if len(w) != 5:
            raise ValueError(f"detector widths: 5 numbers, got {w}")
        if self.cfg.in_channels not in (1, 2):
            raise ValueError(f"detector in_channels: 1 or 2, got {self.cfg.in_channels}")
        self.stem = _block(self.cfg.in_channels, w[0], stride=2)                     # 1/2
        self.down = nn.ModuleList([_block(w[i], w[i + 1], stride=2) for i in range(3)])   # 1/4, 1/8, 1/16
        self.context = nn.Sequential(_block(w[3], w[4], dilation=2), _block(w[4], w[4], dilation=4))
        self.up = nn.ModuleList([_block(w[4] + w[2], w[2]), _block(w[2] + w[1], w[1]), _block(w[1] + w[0], w[0])])
        self.head = nn.Conv2d(w[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.cfg.input_size
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"detector input must be a multiple of 16 px, got {tuple(x.shape[-2:])} (size {s})")
        skips = [self.stem(x)]
        for d in self.down:
            skips.append(d(skips[-1]))
        y = self.context(skips[-1])
        for up, skip in zip(self.up, reversed(skips[:-1])):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = up(torch.cat([y, skip], dim=1))
        return self.head(y)

    def config_dict(self) -> dict:
        d = asdict(self.cfg)
        d["widths"] = list(d["widths"])
        return d
