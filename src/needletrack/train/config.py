"""Training configuration: a YAML file merged over ``DEFAULTS``; unknown keys are errors.

Relative paths in the config (data roots, backgrounds, init weights) are resolved against the current
working directory; optional folders (real backgrounds, stage-0 images) are skipped when absent.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

from needletrack.errors import InputError

DEFAULTS: dict = {
    "seed": 0,
    "model": "stnan_fast",      # preset name, or {preset: NAME, <ModelConfig field>: value, ...}
    "init": None,               # weights (.safetensors or name) to start from, e.g. for fine-tuning
    "size": None,               # training/validation frame side; null = the model's input_size
    "steps": 1000,
    "batch_size": 4,            # per process (rank)
    "clip": {"frames": 5, "gap": [5, 10], "reverse_prob": 0.5},
    "data": {
        "sources": [
            {"kind": "sim", "weight": 1.0, "presets": {"easy": 1, "clinical": 2, "hard": 1},
             "backgrounds": "../shared/data/us_backgrounds", "background_prob": 0.5},
        ],
        "num_workers": None,    # null = min(cores - 1, 12) (per process under torchrun: cores / local ranks)
        "prefetch_factor": 4,
        "start_method": "spawn",  # DataLoader worker start: spawn (safe with OpenCV) | forkserver | fork
    },
    "augment": {},              # AugmentConfig fields; {enabled: false} turns augmentation off
    "optim": {"name": "adamw", "lr": 3e-4, "weight_decay": 0.01, "betas": [0.9, 0.999], "eps": 1e-8},
    "schedule": {
        "warmup": 100,          # linear warm-up steps from warmup_start * lr
        "warmup_start": 0.01,
        "decay": "cosine",      # cosine | step | none
        "min_lr_ratio": 0.02,   # cosine floor
        "milestones": [],       # step decay: steps (or fractions of `steps` when < 1) where LR *= gamma
        "gamma": 0.2,           # the paper's LR x 0.2
    },
    "loss": {},                 # LossConfig fields (bce, bootstrap_bce, dice weights, ...)
    "grad_clip": 1.0,           # max global gradient norm; null/0 = off
    "ema": None,                # decay of an exponential moving average of the weights (e.g. 0.998); null = off.
                                # when on, validation and the best/last weights use the average
    "amp": "auto",              # auto (bf16 on CUDA, off on CPU) | bf16 | off
    "freeze_bn": None,          # null = the model config's freeze_bn; true = BatchNorm stats and affine frozen
    "detach_memory": False,     # stop gradients through predictions written to memory
    "val": {
        "every": 200,           # steps; 0 = only at the end
        "root": None,           # a data set folder to validate on instead of simulated sequences
        "sequences": 8,         # simulated validation split: the named sets val/<preset> of needletrack.data.splits
        "frames": 30,
        "presets": ["clinical", "hard"],
        "seed": 900000,         # unused since the harness's named sets (kept so old configs still load)
        "frame_step": 1,        # unused, as seed
        "backgrounds": "../shared/data/us_backgrounds",
        "save": False,          # also write the simulated split to OUT/val (data set folder)
        "tracker": {},          # options of the Tracker that validates (the shipped streaming policy)
        "mem_every": None,      # unused since validation runs the Tracker (kept so old configs still load)
        "mem_frames": None,     # unused, as mem_every
        "top_k": "model",       # unused, as mem_every
        "use_last": True,       # unused, as mem_every
    },
    "log_every": 10,
    "checkpoint_every": 200,
    "tensorboard": True,        # used when the tensorboard package is installed
}


def _merge(base: dict, over: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in base:
            raise InputError(f"unknown config key '{where}{k}'")
        if isinstance(base[k], dict) and base[k] and isinstance(v, dict) and k not in ("augment", "loss"):
            out[k] = _merge(base[k], v, f"{where}{k}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> dict:
    """Read a training YAML (or just DEFAULTS when ``path`` is None) and validate it."""
    import yaml

    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError("no such config file", p)
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise InputError(f"cannot read YAML ({str(e).splitlines()[0]})", p) from None
        if not isinstance(raw, dict):
            raise InputError("config must be a YAML mapping", p)
    try:
        cfg = _merge(DEFAULTS, raw, "")
        if overrides:
            cfg = _merge(cfg, overrides, "")
        validate(cfg)
    except InputError as e:
        raise InputError(str(e), path) if path is not None else e
    except (ValueError, TypeError) as e:
        raise InputError(f"invalid config: {e}", path) from None
    return cfg


def validate(cfg: dict) -> None:
    def bad(msg):
        raise InputError(msg)

    for k in ("steps", "batch_size", "log_every"):
        if not isinstance(cfg[k], int) or cfg[k] < 1:
            bad(f"'{k}' must be a positive integer, got {cfg[k]!r}")
    if not isinstance(cfg["seed"], int) or not 0 <= cfg["seed"] < 2 ** 31:
        bad(f"'seed' must be an integer in [0, 2**31), got {cfg['seed']!r}")
    if cfg["size"] is not None and (not isinstance(cfg["size"], int) or cfg["size"] % 32 or cfg["size"] <= 0):
        bad(f"'size' must be a positive multiple of 32, got {cfg['size']!r}")
    c = cfg["clip"]
    if not isinstance(c["frames"], int) or c["frames"] < 2:
        bad("clip.frames must be an integer >= 2")
    g = c["gap"]
    if not (isinstance(g, (list, tuple)) and len(g) == 2 and 1 <= int(g[0]) <= int(g[1])):
        bad(f"clip.gap must be [lo, hi] with 1 <= lo <= hi, got {g!r}")
    if not 0 <= float(c["reverse_prob"]) <= 1:
        bad("clip.reverse_prob must be in [0, 1]")
    src = cfg["data"]["sources"]
    if not isinstance(src, list) or not src or not all(isinstance(s, dict) and "kind" in s for s in src):
        bad("data.sources must be a non-empty list of {kind: sim|folder|stage0, ...}")
    nw = cfg["data"]["num_workers"]
    if nw is not None and (not isinstance(nw, int) or nw < 0):
        bad(f"data.num_workers must be null or an integer >= 0, got {nw!r}")
    if cfg["data"]["start_method"] not in ("spawn", "forkserver", "fork"):
        bad("data.start_method must be spawn, forkserver or fork")
    o = cfg["optim"]
    if o["name"] not in ("adam", "adamw"):
        bad(f"optim.name must be adam or adamw, got {o['name']!r}")
    if not float(o["lr"]) > 0:
        bad("optim.lr must be > 0")
    s = cfg["schedule"]
    if s["decay"] not in ("cosine", "step", "none"):
        bad(f"schedule.decay must be cosine, step or none, got {s['decay']!r}")
    if int(s["warmup"]) < 0:
        bad("schedule.warmup must be >= 0")
    if cfg["amp"] not in ("auto", "bf16", "off", False, None):
        bad(f"amp must be auto, bf16 or off, got {cfg['amp']!r}")
    if cfg["grad_clip"] is not None and float(cfg["grad_clip"]) < 0:
        bad("grad_clip must be >= 0 or null")
    if cfg["ema"] is not None and not 0.0 < float(cfg["ema"]) < 1.0:
        bad("ema must be a decay in (0, 1) or null")
    v = cfg["val"]
    if not isinstance(v["every"], int) or v["every"] < 0:
        bad("val.every must be an integer >= 0")
    if v["root"] is None and (int(v["sequences"]) < 1 or int(v["frames"]) < 2):
        bad("val.sequences must be >= 1 and val.frames >= 2")
    if not 0 <= int(v["seed"]) < 2 ** 31 - int(v["sequences"]):
        bad("val.seed must be in [0, 2**31) (training simulator seeds are >= 2**31)")
    # sub-configs validated by their own classes
    from needletrack.data.augment import AugmentConfig
    from needletrack.train.losses import LossConfig

    AugmentConfig.from_dict(cfg["augment"])
    LossConfig.from_dict(cfg["loss"])


def model_config(cfg: dict):
    """The ModelConfig the training config asks for."""
    from needletrack.models import get_config
    from needletrack.models.config import ModelConfig

    m = cfg["model"]
    if isinstance(m, str):
        return get_config(m)
    if isinstance(m, dict):
        m = dict(m)
        preset = m.pop("preset", None)
        if preset is None:
            return ModelConfig.from_dict(m).validate()
        return get_config(preset).replace(**m).validate()
    raise InputError(f"'model' must be a preset name or a mapping, got {type(m).__name__}")


def schedule_lr(cfg: dict, step: int) -> float:
    """Learning-rate factor (times optim.lr) for the update made at ``step`` (0-based): linear warm-up,
    then cosine to ``min_lr_ratio``, or x gamma at each milestone, or constant."""
    s = cfg["schedule"]
    total = cfg["steps"]
    warm = int(s["warmup"])
    if warm > 0 and step < warm:
        a = float(s["warmup_start"])
        return a + (1.0 - a) * step / warm
    if s["decay"] == "cosine":
        import math

        span = max(1, total - warm)
        t = min(1.0, (step - warm) / span)
        lo = float(s["min_lr_ratio"])
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t))
    if s["decay"] == "step":
        f = 1.0
        for m in s["milestones"]:
            m = float(m)
            at = int(round(m * total)) if m < 1 else int(m)
            if step >= at:
                f *= float(s["gamma"])
        return f
    return 1.0
