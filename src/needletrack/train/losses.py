"""Segmentation losses on the predicted frames of a clip, combinable by weights in the config.

- ``bce``: binary cross-entropy with logits, mean over pixels (the paper's loss).
- ``bootstrap_bce``: STCN's bootstrapped cross-entropy: only the hardest ``p`` share of pixels of each
  frame, with ``p`` annealed from 1 to ``bootstrap_p`` between ``bootstrap_start`` and ``bootstrap_end`` steps
  (STCN: 100% -> 15% over the first part of training). Good for thin structures such as needles, whose
  pixels are a tiny share of the image.
- ``dice``: soft Dice per frame, ``1 - (2·Σpg + ε)/(Σp + Σg + ε)``; with ε = 1 an empty ground truth asks for
  an empty prediction.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossConfig:
    bce: float = 1.0
    bootstrap_bce: float = 0.0
    dice: float = 0.0
    bootstrap_p: float = 0.15
    bootstrap_start: int = 0
    bootstrap_end: int = 1000
    pos_weight: float = 1.0     # weight of needle pixels in (bootstrapped) BCE
    dice_eps: float = 1.0

    @classmethod
    def from_dict(cls, d: dict | None) -> "LossConfig":
        d = dict(d or {})
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown loss option(s): {', '.join(unknown)}")
        cfg = cls(**d)
        if min(cfg.bce, cfg.bootstrap_bce, cfg.dice) < 0 or cfg.bce + cfg.bootstrap_bce + cfg.dice <= 0:
            raise ValueError("loss weights must be >= 0 with a positive sum")
        if not 0 < cfg.bootstrap_p <= 1:
            raise ValueError("loss.bootstrap_p must be in (0, 1]")
        return cfg


def _bce_map(logits, target, pos_weight: float):
    pw = None if pos_weight == 1.0 else torch.tensor(pos_weight, device=logits.device, dtype=logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw, reduction="none")


def bce_loss(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    return _bce_map(logits, target, pos_weight).mean()


def bootstrapped_bce(logits: torch.Tensor, target: torch.Tensor, p: float, pos_weight: float = 1.0) -> torch.Tensor:
    """Mean BCE over the top ``p`` share of pixels of each frame (by loss)."""
    m = _bce_map(logits, target, pos_weight).flatten(start_dim=logits.ndim - 3)  # ...×(1·H·W)
    if p >= 1.0:
        return m.mean()
    k = max(1, int(round(m.shape[-1] * p)))
    return m.topk(k, dim=-1, sorted=False).values.mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    p = torch.sigmoid(logits).flatten(start_dim=logits.ndim - 3)
    g = target.flatten(start_dim=target.ndim - 3)
    inter = (p * g).sum(-1)
    return (1 - (2 * inter + eps) / (p.sum(-1) + g.sum(-1) + eps)).mean()


def bootstrap_fraction(cfg: LossConfig, step: int) -> float:
    if step <= cfg.bootstrap_start:
        return 1.0
    if step >= cfg.bootstrap_end:
        return cfg.bootstrap_p
    a = (step - cfg.bootstrap_start) / max(1, cfg.bootstrap_end - cfg.bootstrap_start)
    return 1.0 + a * (cfg.bootstrap_p - 1.0)


def compute_loss(logits: torch.Tensor, target: torch.Tensor, cfg: LossConfig, step: int = 0):
    """Weighted sum of the configured losses (in float32). Returns (total, {name: value})."""
    logits = logits.float()
    target = target.float()
    parts = {}
    total = logits.new_zeros(())
    if cfg.bce > 0:
        parts["bce"] = bce_loss(logits, target, cfg.pos_weight)
        total = total + cfg.bce * parts["bce"]
    if cfg.bootstrap_bce > 0:
        parts["bootstrap_bce"] = bootstrapped_bce(logits, target, bootstrap_fraction(cfg, step), cfg.pos_weight)
        total = total + cfg.bootstrap_bce * parts["bootstrap_bce"]
    if cfg.dice > 0:
        parts["dice"] = dice_loss(logits, target, cfg.dice_eps)
        total = total + cfg.dice * parts["dice"]
    return total, parts
