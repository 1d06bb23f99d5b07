"""Rollout semantics and losses (needletrack.train.rollout / losses)."""
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import nn

from needletrack.train.losses import LossConfig, bootstrap_fraction, bootstrapped_bce, compute_loss, dice_loss
from needletrack.train.rollout import Rollout, rollout


class Q(NamedTuple):
    key: torch.Tensor
    f16: torch.Tensor
    f8: torch.Tensor
    f4: torch.Tensor
    raw16: torch.Tensor


class RecordingModel(nn.Module):
    """A memory model following the ops API that records what reaches memory."""

    is_memory_model = True

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0))
        self.calls = []

    def encode_key(self, image, prev=None):
        self.calls.append(("key", None if prev is None else float(prev.mean())))
        k = nn.functional.avg_pool2d(image, 16)
        return Q(k, k, k, k, image.mean((1, 2, 3), keepdim=True))

    def encode_value(self, image, mask, f16):
        self.calls.append(("value", float(mask.detach().mean())))
        return nn.functional.avg_pool2d(mask, 16) * self.w

    def read_memory(self, mem_key, mem_val, key, valid=None, top_k=None):
        self.calls.append(("read", mem_key.shape[-1]))
        return mem_val.mean(-1, keepdim=True).expand(-1, -1, key.shape[-2] * key.shape[-1]).reshape(
            key.shape[0], -1, key.shape[-2], key.shape[-1])

    def segment(self, r, q):
        return nn.functional.interpolate(r, scale_factor=16.0) * 4 - 2


def test_rollout_writes_first_mask_then_predictions_to_memory():
    m = RecordingModel()
    frames = torch.rand(2, 5, 1, 32, 32)
    first = torch.zeros(2, 1, 32, 32)
    first[:, :, :16] = 1
    out = rollout(m, frames, first)
    assert out.shape == (2, 4, 1, 32, 32)
    values = [c[1] for c in m.calls if c[0] == "value"]
    reads = [c[1] for c in m.calls if c[0] == "read"]
    assert values[0] == pytest.approx(0.5)  # the ground-truth first mask
    assert len(values) == 4  # frames 1..4 -> memory; the last frame's prediction is not needed
    # each later memory entry is the sigmoid of the previous prediction (here a constant 4*0.5-2 = 0 -> 0.5)
    assert values[1] == pytest.approx(float(torch.sigmoid(out[:, 0]).detach().mean()), abs=1e-6)
    assert reads == [4, 8, 12, 16]  # memory grows by one frame (2x2 positions) per predicted frame
    # flow "prev" is the previous frame's raw16
    keys = [c[1] for c in m.calls if c[0] == "key"]
    assert keys[0] is None and keys[1] == pytest.approx(float(frames[:, 0].mean()), abs=1e-6)


def test_rollout_gradient_reaches_memory_through_predictions():
    m = RecordingModel()
    frames = torch.rand(1, 3, 1, 32, 32)
    first = torch.ones(1, 1, 32, 32)
    rollout(m, frames, first)[:, 1].sum().backward()
    g_keep = m.w.grad.clone()
    m.w.grad = None
    rollout(m, frames, first, detach_memory=True)[:, 1].sum().backward()
    assert m.w.grad is not None and g_keep is not None
    assert not torch.allclose(g_keep, m.w.grad)


def test_single_frame_mode_runs_model_on_later_frames():
    class PerFrame(nn.Module):
        is_memory_model = False

        def forward(self, x):
            return x * 10

    frames = torch.rand(2, 4, 1, 8, 8)
    out = Rollout(PerFrame())(frames, torch.zeros(2, 1, 8, 8))
    assert torch.equal(out, frames[:, 1:] * 10)


def test_losses():
    logits = torch.full((2, 4, 1, 8, 8), -5.0)
    target = torch.zeros_like(logits)
    target[..., 3, :] = 1
    total, parts = compute_loss(logits, target, LossConfig(bce=1, bootstrap_bce=1, dice=1), step=10 ** 6)
    assert set(parts) == {"bce", "bootstrap_bce", "dice"}
    # bootstrapping averages only the hardest pixels, so it is larger than plain BCE here
    assert parts["bootstrap_bce"] > parts["bce"] * 3
    assert total == pytest.approx(float(sum(parts.values())), rel=1e-5)
    # perfect prediction: dice ~ 0; empty target and empty prediction: dice ~ 0 (eps rule)
    perfect = torch.where(target > 0, 20.0, -20.0)
    assert float(dice_loss(perfect, target)) < 1e-3
    assert float(dice_loss(torch.full_like(logits, -20.0), torch.zeros_like(target))) < 1e-3
    assert float(bootstrapped_bce(logits, target, 1.0)) == pytest.approx(float(parts["bce"]), rel=1e-5)
    cfg = LossConfig(bootstrap_start=10, bootstrap_end=20, bootstrap_p=0.2)
    assert bootstrap_fraction(cfg, 0) == 1.0 and bootstrap_fraction(cfg, 15) == pytest.approx(0.6)
    assert bootstrap_fraction(cfg, 99) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        LossConfig.from_dict({"bce": 0, "dice": 0})
    with pytest.raises(ValueError):
        LossConfig.from_dict({"focal": 1})


def test_loss_decreases_on_a_learnable_clip():
    from needletrack.models import build_model
    from toy_data import toy_sequence

    torch.manual_seed(0)
    model = build_model("stnan_tiny")
    f, m = toy_sequence(3, 64, np.random.default_rng(1))
    frames = torch.from_numpy(f).float().div(255).unsqueeze(1).unsqueeze(0)
    masks = torch.from_numpy(m).float().unsqueeze(1).unsqueeze(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    cfg = LossConfig(bce=1.0, dice=0.5)
    losses = []
    for step in range(15):
        opt.zero_grad()
        loss, _ = compute_loss(rollout(model, frames, masks[:, 0]), masks[:, 1:], cfg, step)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.4 * np.mean(losses[:3]), losses
