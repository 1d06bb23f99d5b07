"""The baselines' preset parameters, torch-free: read by the package's registry entries (``__init__``) and by
``nets.preset_params`` alike, so neither imports the other for them."""
from __future__ import annotations


def preset_extra(arch: str, scale: str) -> dict:
    """The ``extra`` parameters of a baseline preset at ``scale`` ("paper", "quick", "tiny")."""
    widths = {"paper": (1.0, 64, 4096), "quick": (0.125, 8, 128), "tiny": (0.0625, 4, 16)}[scale]
    p = {"width_mult": widths[0], "base": widths[1], "fc_dim": widths[2]}
    if arch in ("fcn32", "resnet50_fcn32"):
        p["dropout"] = 0.5 if arch == "fcn32" else 0.1
    if arch == "pspnet":
        p.update(output_stride=8, bins=[1, 2, 3, 6], dropout=0.1)
    if arch in ("pspnet", "resnet50_fcn32"):
        p["resnet_depth"] = 50
    return p
