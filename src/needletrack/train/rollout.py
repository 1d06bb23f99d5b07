"""The training rollout (docs/internals.md): frame 1's ground-truth mask goes to memory, frames 2..T are
predicted in turn and each prediction (its sigmoid) is written to memory for the next frame. Every frame of
the clip stays in memory (a clip is short: ``clip.frames``); the streaming memory of tracking, with its
``memory_slots`` bound, is the ``Tracker``'s, which validation runs (``train/validation.py``).

Per-frame baselines (``model.is_memory_model == False``) run ``model(image)`` on frames 2..T, so the same
loop, losses and validation train them ("single-frame mode").
"""
from __future__ import annotations

import torch
from torch import nn


def rollout(model, frames: torch.Tensor, first_mask: torch.Tensor, detach_memory: bool = False) -> torch.Tensor:
    """``frames`` B×T×1×H×W in [0, 1], ``first_mask`` B×1×H×W in [0, 1] -> logits B×(T-1)×1×H×W.

    ``detach_memory``: stop gradients through the predicted masks written to memory (STCN keeps them;
    default False)."""
    if frames.ndim != 5:
        raise ValueError(f"frames must be B×T×1×H×W, got {tuple(frames.shape)}")
    b, t = frames.shape[:2]
    if t < 2:
        raise ValueError("a clip needs at least 2 frames")
    if not getattr(model, "is_memory_model", False):
        rest = frames[:, 1:].reshape(b * (t - 1), *frames.shape[2:])
        return model(rest).reshape(b, t - 1, 1, *frames.shape[-2:])

    q = model.encode_key(frames[:, 0], prev=None)
    v = model.encode_value(frames[:, 0], first_mask.to(frames.dtype), q.f16)
    keys = [q.key.flatten(2)]
    vals = [v.flatten(2)]
    prev = q.raw16
    logits = []
    for i in range(1, t):
        q = model.encode_key(frames[:, i], prev=prev)
        r = model.read_memory(torch.cat(keys, 2), torch.cat(vals, 2), q.key)
        logit = model.segment(r, q)
        logits.append(logit)
        if i < t - 1:
            prob = torch.sigmoid(logit)
            if detach_memory:
                prob = prob.detach()
            v = model.encode_value(frames[:, i], prob.to(frames.dtype), q.f16)
            keys.append(q.key.flatten(2))
            vals.append(v.flatten(2))
        prev = q.raw16
    return torch.stack(logits, 1)


class Rollout(nn.Module):
    """``rollout`` as a module's forward, so DistributedDataParallel (which hooks ``forward``) can wrap it."""

    def __init__(self, model: nn.Module, detach_memory: bool = False):
        super().__init__()
        self.model = model
        self.detach_memory = detach_memory

    def forward(self, frames: torch.Tensor, first_mask: torch.Tensor) -> torch.Tensor:
        return rollout(self.model, frames, first_mask, self.detach_memory)

