"""The training rollout (docs/internals.md): frame 1's ground-truth mask goes to memory, frames 2..T are
predicted in turn and each prediction (its sigmoid) is written to memory for the next frame.

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


@torch.no_grad()
def track_sequence(model, frames: torch.Tensor, first_mask: torch.Tensor, mem_every: int = 5,
                   max_memory: int = 8, top_k: int | None = None, use_last: bool = True,
                   autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Streaming inference over a whole sequence (validation): ``frames`` T×1×H×W, ``first_mask`` 1×H×W.
    Memory: the first frame always, a new memory frame every ``mem_every`` frames (oldest non-first
    dropped beyond ``max_memory``), plus the previous frame as a temporary entry when ``use_last``.
    Returns probabilities T×1×H×W (frame 0 = the given mask)."""
    dev = next(model.parameters()).device
    t = frames.shape[0]
    out = [first_mask.float().cpu()]
    ctx = (torch.autocast(dev.type, dtype=autocast_dtype) if autocast_dtype is not None
           else torch.autocast(dev.type, enabled=False))
    with ctx:
        if not getattr(model, "is_memory_model", False):
            for i in range(1, t):
                out.append(torch.sigmoid(model(frames[i:i + 1].to(dev)).float())[0].cpu())
            return torch.stack(out)
        f0 = frames[0:1].to(dev)
        q = model.encode_key(f0, prev=None)
        v = model.encode_value(f0, first_mask[None].to(dev, f0.dtype), q.f16)
        mem = [(q.key.flatten(2), v.flatten(2))]
        last = None
        prev = q.raw16
        for i in range(1, t):
            fi = frames[i:i + 1].to(dev)
            q = model.encode_key(fi, prev=prev)
            entries = mem + ([last] if last is not None else [])
            mk = torch.cat([e[0] for e in entries], 2)
            mv = torch.cat([e[1] for e in entries], 2)
            logit = model.segment(model.read_memory(mk, mv, q.key, top_k=top_k), q)
            prob = torch.sigmoid(logit.float())
            out.append(prob[0].cpu())
            need_mem = i % mem_every == 0
            if need_mem or use_last:
                v = model.encode_value(fi, prob.to(fi.dtype), q.f16)
                entry = (q.key.flatten(2), v.flatten(2))
                if need_mem:
                    mem.append(entry)
                    if len(mem) > max_memory:
                        del mem[1]
                    last = None
                else:
                    last = entry
            prev = q.raw16
    return torch.stack(out)
