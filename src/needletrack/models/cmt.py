"""The C&T query encoder: a CMT (Guo et al., CVPR 2022) backbone for any input size divisible by 32.

Stem (three 3×3 convs, the first stride 2) then four stages; a stage is a patch embedding (2×2 conv,
stride 2, LayerNorm) and ``depth`` Blocks:

    x = x + DWConv3x3(x)                 local perception unit (LPU)
    x = x + LMHSA(LN(x))                 K, V spatially reduced by a depthwise conv (kernel = stride = r)
    x = x + IRFFN(LN(x))                 1×1 expand, GELU, DWConv3x3 + residual, 1×1 project

Attention is ``softmax(QKᵀ/√d + B) V``. The published CMT learns B as a table tied to one input size;
here B is a function of the relative offset (a small MLP of the log-spaced signed offset, separable in
y and x: B[q, k] = b_y(Δy) + b_x(Δx)), computed from the actual feature size with ``arange`` so it works
at any size and traces to ONNX. Everything runs channels-first (NCHW), so the 1×1 projections are convs.

A small timm-style registry names the encoder variants (``cmt_ti``, ``cmt_xs``, ``cmt_s``, ...).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dim of an NCHW tensor."""

    def __init__(self, ch, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ch))
        self.bias = nn.Parameter(torch.zeros(ch))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        d = x - u
        s = d.pow(2).mean(1, keepdim=True)
        x = d / torch.sqrt(s + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class RelPosBias(nn.Module):
    """Relative position bias parameterised by offset, valid at any feature size.

    ``forward(h, w, r) -> heads × (h·w) × (h/r · w/r)`` for queries on the h×w grid and keys on the grid
    reduced by r (key cell centres at r·j + (r−1)/2, in query-grid units).
    """

    def __init__(self, heads: int, hidden: int = 32, log_base: float = 8.0):
        super().__init__()
        self.heads = heads
        self.log_base = log_base
        self.mlp = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, heads))

    def axis_bias(self, n: int, r: int, ref: torch.Tensor) -> torch.Tensor:
        """heads × n × (n/r): the bias along one axis."""
        q = torch.arange(n, device=ref.device, dtype=ref.dtype)
        k = torch.arange(n // r, device=ref.device, dtype=ref.dtype) * r + (r - 1) / 2.0
        d = q[:, None] - k[None, :]
        d = torch.sign(d) * torch.log2(1.0 + d.abs()) / math.log2(self.log_base)
        return self.mlp(d.unsqueeze(-1)).permute(2, 0, 1)

    def forward(self, h: int, w: int, r: int, ref: torch.Tensor) -> torch.Tensor:
        by = self.axis_bias(h, r, ref)  # heads × h × hk
        bx = self.axis_bias(w, r, ref)  # heads × w × wk
        b = by[:, :, None, :, None] + bx[:, None, :, None, :]  # heads × h × w × hk × wk
        return b.reshape(self.heads, h * w, (h // r) * (w // r))


class LMHSA(nn.Module):
    """Lightweight multi-head self-attention with K/V spatial reduction r and a relative position bias."""

    def __init__(self, dim: int, heads: int, r: int):
        super().__init__()
        self.heads, self.r = heads, r
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Conv2d(dim, dim, 1)
        self.kv = nn.Conv2d(dim, 2 * dim, 1)
        self.reduce = None
        if r > 1:
            self.reduce = nn.Sequential(nn.Conv2d(dim, dim, r, r, groups=dim), LayerNorm2d(dim))
        self.proj = nn.Conv2d(dim, dim, 1)
        self.bias = RelPosBias(heads)

    def forward(self, x):
        b, c, h, w = x.shape
        nh, d = self.heads, c // self.heads
        q = self.q(x).reshape(b, nh, d, h * w).transpose(2, 3)  # B×nh×N×d
        kv_in = x if self.reduce is None else self.reduce(x)
        kv = self.kv(kv_in).reshape(b, 2, nh, d, -1)
        k, v = kv[:, 0], kv[:, 1]  # B×nh×d×Nk
        attn = torch.matmul(q * self.scale, k) + self.bias(h, w, self.r, x).unsqueeze(0)
        attn = attn.softmax(-1)
        out = torch.matmul(attn, v.transpose(2, 3))  # B×nh×N×d
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return self.proj(out)


class IRFFN(nn.Module):
    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hid = max(int(round(dim * ratio)), 1)
        self.expand = nn.Sequential(nn.Conv2d(dim, hid, 1), nn.GELU(), nn.BatchNorm2d(hid))
        self.dw = nn.Sequential(nn.Conv2d(hid, hid, 3, 1, 1, groups=hid), nn.GELU(), nn.BatchNorm2d(hid))
        self.project = nn.Sequential(nn.Conv2d(hid, dim, 1), nn.BatchNorm2d(dim))

    def forward(self, x):
        x = self.expand(x)
        x = x + self.dw(x)
        return self.project(x)


class CMTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, r: int, ffn_ratio: float):
        super().__init__()
        self.lpu = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.norm1 = LayerNorm2d(dim)
        self.attn = LMHSA(dim, heads, r)
        self.norm2 = LayerNorm2d(dim)
        self.ffn = IRFFN(dim, ffn_ratio)

    def forward(self, x):
        x = x + self.lpu(x)
        x = x + self.attn(self.norm1(x))
        x = x + self.ffn(self.norm2(x))
        return x


def _conv_bn_gelu(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU())


class CMTEncoder(nn.Module):
    """``forward(x) -> [f4, f8, f16, f32]`` (f32 omitted when the last depth is 0).

    x: B×in_ch×H×W with H, W divisible by 32.
    """

    def __init__(self, in_ch=1, depths=(3, 3, 16, 3), widths=(64, 128, 256, 512), heads=(1, 2, 4, 8),
                 reductions=(8, 4, 2, 1), stem_width=32, ffn_ratio=4.0):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn_gelu(in_ch, stem_width, 2), _conv_bn_gelu(stem_width, stem_width, 1),
                                  _conv_bn_gelu(stem_width, stem_width, 1))
        self.embeds = nn.ModuleList()
        self.stages = nn.ModuleList()
        cin = stem_width
        n_stages = 4 if depths[3] > 0 else 3
        for i in range(n_stages):
            self.embeds.append(nn.Sequential(nn.Conv2d(cin, widths[i], 2, 2), LayerNorm2d(widths[i])))
            self.stages.append(nn.Sequential(*[CMTBlock(widths[i], heads[i], reductions[i], ffn_ratio)
                                               for _ in range(depths[i])]))
            cin = widths[i]
        self.channels = tuple(widths[:n_stages])
        self.strides = (4, 8, 16, 32)[:n_stages]

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for embed, stage in zip(self.embeds, self.stages):
            x = stage(embed(x))
            feats.append(x)
        return feats


# ---- timm-style registry of encoder variants ----
_ENCODERS: dict[str, Callable[..., CMTEncoder]] = {}


def register_encoder(fn):
    _ENCODERS[fn.__name__] = fn
    return fn


def list_encoders() -> list[str]:
    return sorted(_ENCODERS)


def create_encoder(name: str, **kwargs) -> CMTEncoder:
    if name not in _ENCODERS:
        raise KeyError(f"unknown encoder '{name}' (known: {', '.join(list_encoders())})")
    return _ENCODERS[name](**kwargs)


@register_encoder
def cmt_ti(**kw):
    return CMTEncoder(**{**dict(depths=(2, 2, 10, 2), widths=(46, 92, 184, 368), stem_width=16, ffn_ratio=3.6), **kw})


@register_encoder
def cmt_xs(**kw):
    return CMTEncoder(**{**dict(depths=(3, 3, 12, 3), widths=(52, 104, 208, 416), stem_width=16, ffn_ratio=3.8),
                         **kw})


@register_encoder
def cmt_s(**kw):
    return CMTEncoder(**{**dict(depths=(3, 3, 16, 3), widths=(64, 128, 256, 512), stem_width=32, ffn_ratio=4.0),
                         **kw})


@register_encoder
def cmt_b(**kw):
    return CMTEncoder(**{**dict(depths=(4, 4, 20, 4), widths=(76, 152, 304, 608), stem_width=38, ffn_ratio=4.0),
                         **kw})
