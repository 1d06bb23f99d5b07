"""The model side of a training run: device, model (initialised identically on every rank), frozen
BatchNorm, optimiser, the weight average, the rollout module (DDP-wrapped under torchrun), and the replica
digest that checks that DDP replicas agree."""
from __future__ import annotations

import copy
import hashlib

import torch
from torch import nn

from needletrack.errors import NeedletrackError
from needletrack.train.config import OptimConfig, TrainConfig
from needletrack.train.rollout import Rollout


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise NeedletrackError("--device cuda asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise NeedletrackError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def amp_dtype_for(amp: str, dev: torch.device) -> torch.dtype | None:
    """bf16 autocast when asked for (``auto``: on CUDA), else None (full precision)."""
    return torch.bfloat16 if (amp == "bf16" or (amp == "auto" and dev.type == "cuda")) else None


def build_train_model(cfg: TrainConfig, mcfg, dev: torch.device, fresh: bool, say) -> nn.Module:
    """The model of ``mcfg`` on ``dev``, seeded with ``cfg.seed`` (identical on every rank; DDP also
    broadcasts rank 0's), started from ``cfg.init`` on a fresh run, BatchNorm frozen where the config says."""
    from needletrack.models import build_model, load_model

    torch.manual_seed(cfg.seed)
    model = build_model(mcfg)
    if cfg.init and fresh:
        src = load_model(cfg.init, device="cpu")
        missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
        say(f"initialised from {cfg.init} ({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    if getattr(mcfg, "freeze_bn", False):
        freeze_bn_params(model)
    model.to(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return model


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """``model.train()``, with BatchNorm layers kept in eval mode (frozen statistics) when ``freeze_bn``."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def freeze_bn_params(model: nn.Module) -> int:
    n = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for p in m.parameters():
                p.requires_grad_(False)
                n += 1
    return n


def make_optimizer(model: nn.Module, ocfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam(W) with weight decay on the weights only (not on norms, biases and position biases)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or "pos_bias" in name or "rel_pos" in name
         else decay).append(p)
    groups = [{"params": decay, "weight_decay": ocfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kw = dict(lr=ocfg.lr, betas=tuple(ocfg.betas), eps=ocfg.eps)
    if ocfg.name == "adamw":
        return torch.optim.AdamW(groups, **kw)
    return torch.optim.Adam(groups, **kw)  # Adam: weight_decay is L2 added to the gradient


class WeightAverage:
    """An exponential moving average of a model's parameters (buffers, e.g. BatchNorm statistics, copied).

    ``avg = decay * avg + (1 - decay) * w`` after every optimiser step, with the decay warmed up as
    ``min(decay, (1 + step) / (10 + step))`` so the average is not dominated by the starting weights (the
    global step, so that a resumed run continues exactly)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        for a, w in zip(self.model.parameters(), model.parameters()):
            a.lerp_(w.detach(), 1.0 - d)
        for a, b in zip(self.model.buffers(), model.buffers()):
            a.copy_(b)


def rollout_module(model: nn.Module, cfg: TrainConfig, dist, dev: torch.device, size: int,
                   amp_dtype) -> nn.Module:
    """The training rollout as a module; DistributedDataParallel-wrapped under torchrun."""
    rollout = Rollout(model, detach_memory=cfg.detach_memory)
    if not dist.enabled:
        return rollout
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(rollout, device_ids=[dev.index] if dev.type == "cuda" else None,
               find_unused_parameters=has_unused_params(rollout, cfg.clip.frames, size, dev, amp_dtype))


def has_unused_params(rollout: nn.Module, frames: int, size: int, dev, amp_dtype) -> bool:
    """Run one dummy rollout (RNG untouched) and report whether any trainable parameter got no gradient
    (DDP then needs find_unused_parameters=True)."""
    buffers = {n: b.detach().clone() for n, b in rollout.named_buffers()}
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        x = torch.rand(1, frames, 1, size, size, device=dev)
        m = (torch.rand(1, 1, size, size, device=dev) > 0.5).float()
        with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            y = rollout(x, m)
        y.float().mean().backward()
    unused = [n for n, p in rollout.named_parameters() if p.requires_grad and p.grad is None]
    for p in rollout.parameters():
        p.grad = None
    with torch.no_grad():  # undo the dummy pass's BatchNorm statistics updates
        for n, b in rollout.named_buffers():
            b.copy_(buffers[n])
    return bool(unused)


def weights_digest(model: nn.Module, buffers: bool = False) -> str:
    """SHA-256 of every parameter (and buffer) (to check that DDP replicas agree)."""
    h = hashlib.sha256()
    items = model.state_dict().items() if buffers else model.named_parameters()
    for name, t in sorted(items):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
