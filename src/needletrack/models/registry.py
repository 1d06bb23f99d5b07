"""Registries: architectures (arch name -> builder) and presets (preset name -> ModelConfig).

Usage for a new architecture (e.g. a per-frame baseline in ``models/baselines``)::

    from needletrack.models.registry import register_arch, register_preset
    from needletrack.models.config import ModelConfig

    @register_arch("unet")
    def build_unet(cfg: ModelConfig) -> nn.Module:  # must set .cfg and .is_memory_model
        return UNet(cfg, **cfg.extra)

    register_preset(ModelConfig(name="unet", arch="unet", input_size=448, extra={"width": 32}))

``build_model`` sets ``model.cfg`` and ``model.is_memory_model`` (False unless the builder set it)
if the builder did not. This module does not import torch.
"""
from __future__ import annotations

import fnmatch
import importlib
from typing import Callable

from needletrack.errors import NeedletrackError
from needletrack.models.config import ModelConfig

_ARCHS: dict[str, Callable] = {}
_PRESETS: dict[str, ModelConfig] = {}
# modules whose import registers archs/presets; imported lazily on first lookup
_PLUGIN_MODULES = ("needletrack.models.stnan", "needletrack.models.baselines")
_loaded = False


def register_arch(name: str):
    """Decorator: map a config's ``arch`` to a builder ``fn(cfg) -> nn.Module``."""
    def deco(fn):
        if name in _ARCHS and _ARCHS[name] is not fn:
            raise ValueError(f"arch '{name}' is already registered")
        _ARCHS[name] = fn
        return fn
    return deco


def register_preset(cfg: ModelConfig, overwrite: bool = False) -> ModelConfig:
    """Add a named preset (a ModelConfig). Returns it."""
    if cfg.name in _PRESETS and not overwrite:
        raise ValueError(f"preset '{cfg.name}' is already registered")
    _PRESETS[cfg.name] = cfg
    return cfg


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from needletrack.models.config import PRESETS

    for cfg in PRESETS:
        if cfg.name not in _PRESETS:
            register_preset(cfg)
    for mod in _PLUGIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a plugin not written yet simply adds nothing
            if e.name != mod:
                raise


def list_archs() -> list[str]:
    _ensure_loaded()
    return sorted(_ARCHS)


def list_presets(pattern: str | None = None, arch: str | None = None) -> list[str]:
    """Preset names in registration order, optionally filtered by a glob ``pattern`` and ``arch``."""
    _ensure_loaded()
    names = list(_PRESETS)
    if pattern:
        pats = [p.strip() for p in pattern.split(",") if p.strip()]
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]
    if arch:
        names = [n for n in names if _PRESETS[n].arch == arch]
    return names


def load_config_file(path) -> ModelConfig:
    """A ModelConfig from a YAML or JSON file (a mapping of config fields, or ``{model: {...}}``)."""
    import json
    from pathlib import Path

    from needletrack.errors import InputError

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(f"cannot read model config ({e.strerror})", path) from None
    try:
        if path.suffix == ".json":
            d = json.loads(text)
        else:
            import yaml

            d = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - yaml/json parse errors
        raise InputError(f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {str(e).splitlines()[0]}",
                         path) from None
    if isinstance(d, dict) and isinstance(d.get("model"), dict):
        d = d["model"]
    try:
        return ModelConfig.from_dict(d)
    except NeedletrackError as e:
        raise InputError(str(e), path) from None


def get_config(name: str | ModelConfig) -> ModelConfig:
    """A copy of the preset ``name`` (a ModelConfig passes through as a copy; a path ending in .yaml,
    .yml or .json is read with ``load_config_file``)."""
    if isinstance(name, ModelConfig):
        return name.replace()
    if str(name).endswith((".yaml", ".yml", ".json")):
        return load_config_file(name)
    _ensure_loaded()
    if name not in _PRESETS:
        near = fnmatch.filter(_PRESETS, f"*{name}*")[:5]
        hint = f" (did you mean: {', '.join(near)}?)" if near else " (see `needletrack models`)"
        raise NeedletrackError(f"unknown model preset '{name}'{hint}")
    return _PRESETS[name].replace()


def build_model(name_or_cfg: str | ModelConfig | dict, **overrides):
    """Build an untrained model from a preset name, a ModelConfig or a config dict.

    ``overrides`` change config fields first, e.g. ``build_model("stnan_fast", input_size=64)``.
    """
    if isinstance(name_or_cfg, dict):
        cfg = ModelConfig.from_dict(name_or_cfg)
    else:
        cfg = get_config(name_or_cfg)
    if overrides:
        cfg = cfg.replace(**overrides)
    _ensure_loaded()
    if cfg.arch not in _ARCHS:
        raise NeedletrackError(f"model config '{cfg.name}': unknown arch '{cfg.arch}' "
                               f"(known: {', '.join(sorted(_ARCHS))})")
    cfg.check()
    model = _ARCHS[cfg.arch](cfg)
    if getattr(model, "cfg", None) is None:
        model.cfg = cfg
    if not hasattr(model, "is_memory_model"):
        model.is_memory_model = False
    return model
