"""The six per-frame baselines: built from the registry, forward/backward at a tiny input, logits at input size."""
import pytest

import torch

from needletrack.models.baselines import BASELINE_ARCHS, DISPLAY_NAMES, preset_name  # noqa: E402
from needletrack.models.registry import build_model, get_config, list_presets  # noqa: E402

ARCHS = list(BASELINE_ARCHS)


def test_all_six_registered_at_three_scales():
    assert set(ARCHS) == {"pspnet", "fcn32", "unet", "segnet", "vgg16_unet", "resnet50_fcn32"}
    names = set(list_presets())
    for a in ARCHS:
        for scale, size in (("paper", 448), ("quick", 128), ("tiny", 64)):
            n = preset_name(a, scale)
            assert n in names
            cfg = get_config(n)
            assert cfg.arch == a and cfg.input_size == size
    assert DISPLAY_NAMES["vgg16_unet"] == "VGG16+UNet"


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_backward_tiny(arch):
    torch.manual_seed(0)
    model = build_model(preset_name(arch, "tiny"))
    assert model.is_memory_model is False
    assert model.cfg.arch == arch
    model.train()
    x = torch.rand(2, 1, 64, 96)  # non-square on purpose
    logit = model(x)
    assert logit.shape == (2, 1, 64, 96)
    assert torch.isfinite(logit).all()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, (x > 0.5).float())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "every parameter takes part in the forward pass"
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_batch1_and_output_depends_on_input(arch):
    torch.manual_seed(0)
    model = build_model(preset_name(arch, "tiny")).eval()
    a = torch.zeros(1, 1, 64, 64)
    b = torch.zeros(1, 1, 64, 64)
    b[..., 30:34, 8:56] = 1.0  # a bright line
    with torch.no_grad():
        la, lb = model(a), model(b)
    assert la.shape == (1, 1, 64, 64)
    assert not torch.equal(la, lb), "the logit must depend on the image"
    assert torch.isfinite(la).all()


def test_train_step_reduces_loss_unet():
    """A few optimiser steps on one image lower the loss: the model can learn (not just run)."""
    torch.manual_seed(0)
    model = build_model(preset_name("unet", "tiny"))
    x = torch.rand(2, 1, 32, 32) * 0.3
    y = torch.zeros(2, 1, 32, 32)
    x[..., 10:13, 4:28] += 0.6
    y[..., 10:13, 4:28] = 1
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(70):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    with torch.no_grad():
        pred = model(x) > 0
    iou = float((pred & (y > 0)).sum()) / float((pred | (y > 0)).sum())
    assert iou > 0.5, "the line is segmented, not just the prior learned"


def test_rejects_wrong_channel_count():
    model = build_model(preset_name("fcn32", "tiny")).eval()
    with pytest.raises(ValueError, match="B×1×H×W"):
        model(torch.rand(1, 3, 64, 64))


def test_paper_presets_have_published_sizes():
    """Parameter counts of the paper-width builds match the published architectures' magnitudes."""
    from needletrack.models.baselines.nets import build, preset_params

    def n_params(arch):
        m = build(arch, preset_params(arch, "paper"))
        return sum(p.numel() for p in m.parameters()) / 1e6

    assert 30.5 < n_params("unet") < 31.5        # U-Net (64..1024): ~31.0M
    assert 29.0 < n_params("segnet") < 30.0      # SegNet (VGG16-BN encoder + mirror): ~29.4M


def test_bilinear_deconv_is_bilinear_upsampling():
    from needletrack.models.baselines.common import bilinear_deconv

    up = bilinear_deconv(1, 4)
    x = torch.ones(1, 1, 4, 4)
    y = up(x)
    assert y.shape == (1, 1, 16, 16)
    # away from the borders a constant stays constant
    assert torch.allclose(y[..., 4:12, 4:12], torch.ones(1, 1, 8, 8), atol=1e-6)


def test_resnet_output_stride():
    from needletrack.models.baselines.common import ResNetEncoder

    x = torch.rand(1, 1, 64, 64)
    for depth in (18, 50):
        assert ResNetEncoder(depth, 1, 4).out_channels[-1] == 4 * 8 * (4 if depth == 50 else 1)
    for os_, expect in ((32, 2), (16, 4), (8, 8)):
        enc = ResNetEncoder(18, 1, 4, os_).eval()
        with torch.no_grad():
            assert enc(x)[-1].shape[-1] == expect


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_start_at_the_needle_prior(arch):
    """At initialisation every baseline predicts the needle's prior (~2 % per pixel) everywhere, so training
    starts from a small BCE instead of undoing logits of several units (He fan-out init on a 1-channel layer)."""
    torch.manual_seed(0)
    model = build_model(preset_name(arch, "tiny")).eval()
    x = torch.rand(2, 1, 64, 64)
    target = torch.zeros_like(x)
    target[..., 30:32, 8:56] = 1.0
    with torch.no_grad():
        logit = model(x)
    p = torch.sigmoid(logit)
    assert 0.005 < float(p.median()) < 0.08
    assert float(torch.nn.functional.binary_cross_entropy_with_logits(logit, target)) < 0.25
