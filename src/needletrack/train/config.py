"""Training configuration: ``TrainConfig``, a typed dataclass read from a YAML file; unknown keys are errors.

The defaults are the dataclasses' field defaults (one place); a YAML file (or a dict) is merged over them,
section by section (``augment``, ``loss``, ``data.sources`` and ``val.tracker`` are replaced whole), then
checked, then typed. ``TrainConfig.to_dict()`` is the resolved config as a plain dict: what ``config.yaml``,
``summary.json``, the checkpoint and the weights' metadata hold, and what ``from_dict`` reads back.

Relative paths in the config (data roots, backgrounds, init weights) are resolved against the current
working directory; optional folders (real backgrounds, stage-0 images) are skipped when absent.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from needletrack.data.augment import AugmentConfig
from needletrack.errors import InputError
from needletrack.train.losses import LossConfig


def _sim_source() -> dict:
    return {"kind": "sim", "weight": 1.0, "presets": {"easy": 1, "clinical": 2, "hard": 1},
            "backgrounds": "../shared/data/us_backgrounds", "background_prob": 0.5}


@dataclass
class ClipConfig:
    frames: int = 5                                             # frames per training clip (T)
    gap: list[int] = field(default_factory=lambda: [5, 10])     # [lo, hi] frames between two clip frames
    reverse_prob: float = 0.5                                   # chance of playing a clip backwards


@dataclass
class DataConfig:
    sources: list[dict] = field(default_factory=lambda: [_sim_source()])  # {kind: sim|folder|stage0|..., ...}
    num_workers: int | None = None  # null = min(cores - 1, 12) (per process under torchrun: cores / local ranks)
    prefetch_factor: int = 4
    start_method: str = "spawn"     # DataLoader worker start: spawn (safe with OpenCV) | forkserver | fork


@dataclass
class OptimConfig:
    name: str = "adamw"             # adamw | adam (Adam: weight_decay is L2 added to the gradient)
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class ScheduleConfig:
    warmup: int = 100               # linear warm-up steps from warmup_start * lr
    warmup_start: float = 0.01
    decay: str = "cosine"           # cosine | step | none
    min_lr_ratio: float = 0.02      # cosine floor
    milestones: list[float] = field(default_factory=list)  # step decay: steps (or fractions of `steps` when
    #                                                        < 1) where LR *= gamma
    gamma: float = 0.2              # the paper's LR x 0.2


@dataclass
class ValConfig:
    """Validation: each sequence is tracked from its first mask by the shipped ``Tracker`` (its own streaming
    memory: ``memory_slots``, ``mem_every``, set through ``tracker``), and scored (train/validation.py)."""

    every: int = 200                # steps; 0 = only at the end
    root: str | None = None         # a data set folder to validate on instead of simulated sequences
    sequences: int = 8              # simulated validation split: the named sets val/<preset> of data.splits
    frames: int = 30
    presets: list[str] = field(default_factory=lambda: ["clinical", "hard"])
    backgrounds: str | None = "../shared/data/us_backgrounds"
    save: bool = False              # also write the simulated split to OUT/val (data set folder)
    tracker: dict = field(default_factory=dict)  # Tracker options (e.g. memory_slots, mem_every, min_score)
    # not read since validation runs the Tracker (the set names fix seeds and steps, the Tracker its memory);
    # kept so that old configs and checkpoints still load. Use `tracker: {memory_slots: N, mem_every: M}`.
    seed: int = 900000
    frame_step: int | None = 1
    mem_every: int | None = None
    mem_frames: int | None = None
    top_k: str | int | None = "model"
    use_last: bool = True


@dataclass
class TrainConfig:
    seed: int = 0
    model: str | dict = "stnan_fast"   # preset name, or {preset: NAME, <ModelConfig field>: value, ...}
    init: str | None = None            # weights (.safetensors or name) to start from, e.g. for fine-tuning
    size: int | None = None            # training/validation frame side; null = the model's input_size
    steps: int = 1000
    batch_size: int = 4                # per process (rank)
    clip: ClipConfig = field(default_factory=ClipConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # {enabled: false} turns augmentation off
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)           # bce, bootstrap_bce, dice weights, ...
    grad_clip: float | None = 1.0      # max global gradient norm; null/0 = off
    ema: float | None = None           # decay of an exponential moving average of the weights (e.g. 0.998);
    #                                    null = off. When on, validation and the best/last weights use it
    amp: str = "auto"                  # auto (bf16 on CUDA, off on CPU) | bf16 | off
    freeze_bn: bool | None = None      # null = the model config's freeze_bn; true = BatchNorm frozen
    detach_memory: bool = False        # stop gradients through predictions written to memory
    val: ValConfig = field(default_factory=ValConfig)
    log_every: int = 10
    checkpoint_every: int = 200        # steps; 0 = only when the run stops
    tensorboard: bool = True           # used when the tensorboard package is installed

    # -- (de)serialisation --
    @classmethod
    def from_dict(cls, raw: dict | None = None, overrides: dict | None = None) -> "TrainConfig":
        """Merge ``raw`` (then ``overrides``) over the defaults, check and type it; errors are InputError."""
        try:
            d = _merge(DEFAULTS, raw or {}, "")
            if overrides:
                d = _merge(d, overrides, "")
            check_config(d)
            return cls._typed(d)
        except (ValueError, TypeError) as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"invalid config: {e}") from None

    @classmethod
    def _typed(cls, d: dict) -> "TrainConfig":
        c, o, s, v = d["clip"], d["optim"], d["schedule"], d["val"]
        opt_int = (lambda x: None if x is None else int(x))
        opt_float = (lambda x: None if x is None else float(x))
        return cls(
            seed=int(d["seed"]), model=copy.deepcopy(d["model"]), init=d["init"], size=opt_int(d["size"]),
            steps=int(d["steps"]), batch_size=int(d["batch_size"]),
            clip=ClipConfig(int(c["frames"]), [int(g) for g in c["gap"]], float(c["reverse_prob"])),
            data=DataConfig(copy.deepcopy(d["data"]["sources"]), opt_int(d["data"]["num_workers"]),
                            int(d["data"]["prefetch_factor"]), str(d["data"]["start_method"])),
            augment=AugmentConfig.from_dict(d["augment"]),
            optim=OptimConfig(o["name"], float(o["lr"]), float(o.get("weight_decay", 0.0)),
                              [float(b) for b in o["betas"]], float(o["eps"])),
            schedule=ScheduleConfig(int(s["warmup"]), float(s["warmup_start"]), s["decay"],
                                    float(s["min_lr_ratio"]), [float(m) for m in s["milestones"]],
                                    float(s["gamma"])),
            loss=LossConfig.from_dict(d["loss"]),
            grad_clip=opt_float(d["grad_clip"]), ema=opt_float(d["ema"]),
            amp="off" if d["amp"] in (False, None) else d["amp"],
            freeze_bn=None if d["freeze_bn"] is None else bool(d["freeze_bn"]),
            detach_memory=bool(d["detach_memory"]),
            val=ValConfig(int(v["every"]), v["root"], int(v["sequences"]), int(v["frames"]), list(v["presets"]),
                          v["backgrounds"], bool(v["save"]), dict(v["tracker"] or {}), int(v["seed"]),
                          v["frame_step"], v["mem_every"], v["mem_frames"], v["top_k"], v["use_last"]),
            log_every=int(d["log_every"]), checkpoint_every=int(d["checkpoint_every"] or 0),
            tensorboard=bool(d["tensorboard"]),
        )

    def to_dict(self) -> dict:
        """The resolved config as plain YAML/JSON data (lists, not tuples)."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)

    # -- derived --
    def model_config(self):
        """The ModelConfig the training config asks for (``freeze_bn`` applied where set)."""
        from needletrack.models import get_config
        from needletrack.models.config import ModelConfig

        m = self.model
        if isinstance(m, str):
            mcfg = get_config(m)
        elif isinstance(m, dict):
            m = dict(m)
            preset = m.pop("preset", None)
            mcfg = (ModelConfig.from_dict(m) if preset is None else get_config(preset).replace(**m)).check()
        else:
            raise InputError(f"'model' must be a preset name or a mapping, got {type(m).__name__}")
        if self.freeze_bn is not None and hasattr(mcfg, "freeze_bn"):
            mcfg = mcfg.replace(freeze_bn=bool(self.freeze_bn))
        return mcfg

    def lr_at(self, step: int) -> float:
        """The learning rate of the update made at ``step`` (0-based)."""
        return self.optim.lr * schedule_lr(self, step)


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


DEFAULTS: dict = TrainConfig().to_dict()
_WHOLE = ("augment", "loss")   # sections replaced whole, not merged key by key (their classes fill the rest)


def _merge(base: dict, over: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in base:
            raise InputError(f"unknown config key '{where}{k}'")
        if isinstance(base[k], dict) and base[k] and isinstance(v, dict) and (where or k not in _WHOLE):
            out[k] = _merge(base[k], v, f"{where}{k}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> TrainConfig:
    """Read a training YAML (or just the defaults when ``path`` is None), check it and type it."""
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
        return TrainConfig.from_dict(raw, overrides)
    except InputError as e:
        raise InputError(str(e), path) if path is not None else e


def check_config(cfg: dict) -> None:
    """Check a merged config dict (before typing); raises InputError naming the key."""
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
    # sub-configs checked by their own classes
    AugmentConfig.from_dict(cfg["augment"])
    LossConfig.from_dict(cfg["loss"])


def model_config(cfg: TrainConfig):
    """The ModelConfig the training config asks for (``TrainConfig.model_config``)."""
    return cfg.model_config()


def schedule_lr(cfg: TrainConfig, step: int) -> float:
    """Learning-rate factor (times optim.lr) for the update made at ``step`` (0-based): linear warm-up,
    then cosine to ``min_lr_ratio``, or x gamma at each milestone, or constant."""
    s = cfg.schedule
    total = cfg.steps
    warm = s.warmup
    if warm > 0 and step < warm:
        a = s.warmup_start
        return a + (1.0 - a) * step / warm
    if s.decay == "cosine":
        span = max(1, total - warm)
        t = min(1.0, (step - warm) / span)
        lo = s.min_lr_ratio
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t))
    if s.decay == "step":
        f = 1.0
        for m in s.milestones:
            at = int(round(m * total)) if m < 1 else int(m)
            if step >= at:
                f *= s.gamma
        return f
    return 1.0
