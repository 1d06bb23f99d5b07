"""needletrack.models.baselines: the six per-frame segmenters the paper compares STNAN with (Table 4).

PSPNet, FCN32, UNet, SegNet, VGG16+UNet, ResNet50+FCN32 — own code (see ``nets.py``), random init.
Each is an arch in the model registry and has three presets:

- ``<arch>``        published widths, input 448 (the paper's setting, for a GPU);
- ``<arch>_quick``  1/8 widths, input 128 (the CPU quick scale of ``needletrack tables``);
- ``<arch>_tiny``   1/16 widths, input 64 (tests).

Interface: ``logit = model(image)``, image B×1×H×W in [0, 1] -> B×1×H×W logits, ``model.is_memory_model
is False``, ``model.cfg`` the ModelConfig. Builder keyword arguments live in ``cfg.extra`` (see
``nets.py`` for their meaning). Importing this package does not import torch.
"""
from __future__ import annotations

from needletrack.models.config import ModelConfig
from needletrack.models.baselines.presets import preset_extra as _extra
from needletrack.models.registry import register_arch, register_preset

BASELINE_ARCHS = ("pspnet", "fcn32", "unet", "segnet", "vgg16_unet", "resnet50_fcn32")  # Table 4 order
DISPLAY_NAMES = {
    "pspnet": "PSPNet",
    "fcn32": "FCN32",
    "unet": "UNet",
    "segnet": "SegNet",
    "vgg16_unet": "VGG16+UNet",
    "resnet50_fcn32": "ResNet50+FCN32",
}
SCALE_INPUT = {"paper": 448, "quick": 128, "tiny": 64}
_SUFFIX = {"paper": "", "quick": "_quick", "tiny": "_tiny"}


def _builder(arch: str):
    def build(cfg: ModelConfig):
        from needletrack.models.baselines.nets import build as _build

        return _build(arch, cfg.extra, cfg)

    build.__name__ = f"build_{arch}"
    return build


def preset_name(arch: str, scale: str = "paper") -> str:
    return arch + _SUFFIX[scale]


for _arch in BASELINE_ARCHS:
    register_arch(_arch)(_builder(_arch))
    for _scale in ("paper", "quick", "tiny"):
        register_preset(ModelConfig(
            name=preset_name(_arch, _scale), arch=_arch, input_size=SCALE_INPUT[_scale],
            description=f"{DISPLAY_NAMES[_arch]} per-frame baseline ({_scale} widths)",
            extra=_extra(_arch, _scale),
        ), overwrite=True)

__all__ = ["BASELINE_ARCHS", "DISPLAY_NAMES", "preset_name"]
