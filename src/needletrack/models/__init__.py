"""needletrack.models: STCN, STCN+C&T and STNAN (C&T + flow regression), built from configs.

Public API (see docs/internals.md): ``ModelConfig``, ``get_config``, ``list_presets``, ``build_model``,
``register_arch``, ``register_preset``, ``save_model``, ``load_model``, ``QueryFeatures``.
Names resolve lazily so ``import needletrack.models`` (and listing presets) does not import torch.
"""
from __future__ import annotations

from needletrack.models.config import ModelConfig
from needletrack.models.registry import (build_model, get_config, list_archs, list_presets, register_arch,
                                         register_preset)

__all__ = ["ModelConfig", "get_config", "list_presets", "list_archs", "build_model", "register_arch",
           "register_preset", "save_model", "load_model", "QueryFeatures", "STNAN"]


def __getattr__(name):
    if name in ("save_model", "load_model"):
        from needletrack.models import weights

        return getattr(weights, name)
    if name in ("QueryFeatures", "STNAN"):
        from needletrack.models import stnan

        return getattr(stnan, name)
    raise AttributeError(name)
