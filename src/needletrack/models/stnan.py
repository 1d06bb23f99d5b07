"""One memory-network class for STCN, STCN+C&T and STNAN, built from a ModelConfig.

The model is a set of operations; the rollout (training) and the memory store (streaming) live outside:

    q = model.encode_key(image, prev=None)      # QueryFeatures(key, f16, f8, f4, raw16)
    v = model.encode_value(image, mask, q.f16)  # B×Cv×h×w
    r = model.read_memory(mem_key, mem_val, q.key, valid=None, top_k=None)
    logit = model.segment(r, q)                 # B×1×H×W

``encode_key`` = ``extract`` (backbone, once per frame) then ``fuse_motion`` (flow + MAFFM against the
previous frame's ``raw16``; no-op without flow). Images are B×1×H×W floats in [0, 1], H and W divisible by 32.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
import torch.nn.functional as F

from needletrack.models.cmt import CMTEncoder
from needletrack.models.config import ModelConfig
from needletrack.models.decoder import Decoder
from needletrack.models.flow import MAFFM, FlowRegression
from needletrack.models.memory import read_memory as _read_memory
from needletrack.models.registry import register_arch
from needletrack.models.resnet import ValueEncoder, resnet_encoder

IMAGE_MEAN, IMAGE_STD = 0.5, 0.25


class QueryFeatures(NamedTuple):
    key: torch.Tensor  # B×Ck×h×w (h = H/16)
    f16: torch.Tensor  # B×C16×h×w (motion-fused where the model has flow)
    f8: torch.Tensor  # B×C8×2h×2w
    f4: torch.Tensor  # B×C4×4h×4w
    raw16: torch.Tensor  # this frame's matching features: pass as ``prev`` for the next frame


class RawQuery(NamedTuple):
    f16: torch.Tensor
    f8: torch.Tensor
    f4: torch.Tensor
    raw16: torch.Tensor


class STNAN(nn.Module):
    """STCN (ResNet keys), STCN+C&T (CMT keys) or STNAN (CMT keys + flow + MAFFM), per ``cfg``."""

    is_memory_model = True

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.key_encoder == "cmt":
            self.key_encoder = CMTEncoder(1, cfg.encoder_depths, cfg.encoder_widths, cfg.encoder_heads,
                                          cfg.encoder_reductions, cfg.stem_width, cfg.ffn_ratio)
            c4, c8, c16 = self.key_encoder.channels[:3]
            self.top_down = None
            if len(self.key_encoder.channels) == 4:  # stage 4 (stride 32) feeds stride 16, FPN-style
                self.top_down = nn.Conv2d(self.key_encoder.channels[3], c16, 1)
        else:
            self.key_encoder = resnet_encoder(cfg.key_encoder, 1, cfg.key_base_width)
            c4, c8, c16 = self.key_encoder.channels
            self.top_down = None
        self.channels = (c4, c8, c16)
        self.key_proj = nn.Conv2d(c16, cfg.key_dim, 3, 1, 1)
        self.flow = self.maffm = None
        if cfg.has_flow:
            self.flow = FlowRegression(c16, cfg.flow_window, cfg.flow_dim, cfg.flow_match_dim, cfg.motion_dim,
                                       cfg.flow_chunk)
            self.maffm = MAFFM(cfg.motion_dim)
        self.value_encoder = ValueEncoder(c16, cfg.value_dim, cfg.value_widths, cfg.value_blocks, cfg.value_encoder)
        self.decoder = Decoder(cfg.value_dim, c16, c8, c4, cfg.decoder_dims)
        nn.init.orthogonal_(self.key_proj.weight)
        nn.init.zeros_(self.key_proj.bias)

    # ---- helpers ----
    @staticmethod
    def normalize(image: torch.Tensor) -> torch.Tensor:
        return (image - IMAGE_MEAN) / IMAGE_STD

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.cfg.freeze_bn:  # STCN's practice: BN statistics fixed while training
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # ---- operations ----
    def extract(self, image: torch.Tensor) -> RawQuery:
        """Backbone features of one frame (before motion fusion)."""
        x = self.normalize(image)
        feats = self.key_encoder(x)
        f4, f8, f16 = feats[0], feats[1], feats[2]
        if self.top_down is not None:
            f16 = f16 + F.interpolate(self.top_down(feats[3]), scale_factor=2.0, mode="bilinear",
                                      align_corners=False)
        raw16 = self.flow.project(f16) if self.flow is not None else f16
        return RawQuery(f16, f8, f4, raw16)

    def fuse_motion(self, raw: RawQuery, prev: torch.Tensor | None = None) -> QueryFeatures:
        """Flow regression against ``prev`` (the previous frame's raw16) and MAFFM, then the key.

        ``prev=None`` means zero motion: the frame is matched against itself.
        """
        f16, f8, f4 = raw.f16, raw.f8, raw.f4
        if self.flow is not None:
            _, motion = self.flow(raw.raw16, raw.raw16 if prev is None else prev)
            att = self.maffm.attention(motion)
            f16 = MAFFM.fuse(f16, att)
            f8 = MAFFM.fuse(f8, att)
            f4 = MAFFM.fuse(f4, att)
        return QueryFeatures(self.key_proj(f16), f16, f8, f4, raw.raw16)

    def encode_key(self, image: torch.Tensor, prev: torch.Tensor | None = None) -> QueryFeatures:
        return self.fuse_motion(self.extract(image), prev)

    def encode_value(self, image: torch.Tensor, mask: torch.Tensor, f16: torch.Tensor) -> torch.Tensor:
        return self.value_encoder(self.normalize(image), mask, f16)

    def read_memory(self, mem_key, mem_val, key, valid=None, top_k=None) -> torch.Tensor:
        return _read_memory(mem_key, mem_val, key, valid=valid, top_k=top_k)

    def segment(self, readout: torch.Tensor, q: QueryFeatures) -> torch.Tensor:
        return self.decoder(readout, q.f16, q.f8, q.f4)

    # ---- convenience: the training rollout (needletrack.train has the real one) ----
    def forward(self, frames: torch.Tensor, first_mask: torch.Tensor) -> torch.Tensor:
        """frames B×T×1×H×W, first_mask B×1×H×W -> logits B×(T−1)×1×H×W (every frame kept in memory)."""
        t = frames.shape[1]
        q = self.encode_key(frames[:, 0])
        keys = [q.key.flatten(2)]
        vals = [self.encode_value(frames[:, 0], first_mask, q.f16).flatten(2)]
        prev = q.raw16
        logits = []
        for i in range(1, t):
            q = self.encode_key(frames[:, i], prev)
            r = self.read_memory(torch.cat(keys, 2), torch.cat(vals, 2), q.key)
            logit = self.segment(r, q)
            logits.append(logit)
            prev = q.raw16
            if i < t - 1:
                keys.append(q.key.flatten(2))
                vals.append(self.encode_value(frames[:, i], torch.sigmoid(logit), q.f16).flatten(2))
        return torch.stack(logits, 1)


@register_arch("stcn")
def build_stcn(cfg: ModelConfig) -> STNAN:
    return STNAN(cfg)


@register_arch("stnan")
def build_stnan(cfg: ModelConfig) -> STNAN:
    return STNAN(cfg)
