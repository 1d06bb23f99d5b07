"""One optimiser step (rollout, loss, backward, clipped step) and the running means that the training log
reports every ``log_every`` steps."""
from __future__ import annotations

import torch

from needletrack.errors import NeedletrackError
from needletrack.train import distributed as D
from needletrack.train.losses import LossConfig, compute_loss

LOSS_PARTS = ("bce", "bootstrap_bce", "dice")


def train_step(net, opt, params: list, batch: dict, lr: float, step: int, loss_cfg: LossConfig, grad_clip: float,
               dev: torch.device, amp_dtype) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """Roll the model over a batch of clips from each clip's first mask and step the optimiser at ``lr``.
    ``step`` is the 0-based index of this update. Returns (loss, its parts, the gradient norm)."""
    frames = batch["frames"].to(dev, non_blocking=True).float().div_(255.0)
    masks = batch["masks"].to(dev, non_blocking=True).float()
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = net(frames, masks[:, 0])
    loss, parts = compute_loss(logits, masks[:, 1:], loss_cfg, step)
    if not torch.isfinite(loss):
        raise NeedletrackError(f"loss became {loss.item()} at step {step + 1}; lower optim.lr or "
                               "raise schedule.warmup")
    loss.backward()
    gn = (torch.nn.utils.clip_grad_norm_(params, grad_clip) if grad_clip > 0
          else torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params if p.grad is not None)))
    opt.step()
    return loss, parts, gn


class StepStats:
    """Sums over the steps since the last log row: loss and its parts, gradient norm, step and data time."""

    def __init__(self):
        self.n = 0
        self.loss = 0.0
        self.parts: dict[str, float] = {}
        self.gn = 0.0
        self.data_s = 0.0
        self.step_s = 0.0

    def add(self, loss, parts: dict, gn, data_s: float, step_s: float) -> None:
        self.n += 1
        self.loss += float(loss.detach())
        for k, v in parts.items():
            self.parts[k] = self.parts.get(k, 0.0) + float(v.detach())
        self.gn += float(gn)
        self.data_s += data_s
        self.step_s += step_s

    def row(self, step: int, lr: float, clips_per_step: int, elapsed_s: float, dist, dev) -> dict:
        """The train_log.csv row (loss means over every rank; a collective call under torchrun)."""
        n = self.n
        vals = D.all_mean(dist, [self.loss / n] + [self.parts.get(k, 0.0) / n for k in LOSS_PARTS], dev)
        row = {"step": step, "lr": lr, "loss": vals[0], "grad_norm": self.gn / n,
               "step_s": self.step_s / n, "data_s": self.data_s / n,
               "clips_per_s": n * clips_per_step / max(self.step_s, 1e-9), "elapsed_s": elapsed_s}
        for k, v in zip(LOSS_PARTS, vals[1:]):
            if k in self.parts:
                row[k] = v
        return row

    def data_share(self) -> float:
        """Share of the step time spent waiting for data."""
        return self.data_s / max(self.step_s, 1e-9)
