"""Checkpoint and resume of a training run: ``OUT/checkpoint.pt`` holds everything needed to continue
exactly (model, optimiser, weight average, step, best, logs, every rank's RNG state), and the weights files
(``last.safetensors``, ``best.safetensors``) carry the training step, seed, config and validation figures.

Exact resume: the data of step k is a pure function of (seed, k, rank) (``StepBatchSampler`` + per-sample
seeding), so restoring the state below makes an interrupted-and-resumed run equal an uninterrupted one bit
for bit on CPU.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from needletrack.errors import InputError
from needletrack.train.config import TrainConfig
from needletrack.utils import atomic_path

CKPT = "checkpoint.pt"
FORMAT = "needletrack-train-1"
_NEEDED = ("config", "model", "optimizer", "step", "best", "train_rows", "val_rows", "rng")


@dataclass
class RunRecord:
    """What a run has done so far (saved in the checkpoint, restored on resume)."""

    step: int = 0
    best: dict = field(default_factory=lambda: {"step": None, "iou": -1.0, "metrics": None})
    train_rows: list[dict] = field(default_factory=list)
    val_rows: list[dict] = field(default_factory=list)
    wall_before: float = 0.0          # wall time of the earlier runs of a resumed run


# ------------------------------------------------------------------------------------------------- files
def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged or foreign file is the user's input
        raise InputError(f"cannot read checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})", path) from None


def save_weights(model: nn.Module, path: Path, meta: dict) -> None:
    from needletrack.models import save_model

    save_model(model, path, meta=meta)  # atomic


def weights_meta(cfg: TrainConfig, step: int, val: dict | None) -> dict:
    meta = {"trained_steps": step, "seed": cfg.seed, "train_config": cfg.to_dict()}
    if val is not None:
        meta["val"] = {g: {k: r.get(k) for k in ("iou", "dice", "empty_frame_accuracy")} for g, r in val.items()}
    return meta


def checkpoint_state(step: int, cfg: TrainConfig, model: nn.Module, opt, ema, record: RunRecord, rngs: list,
                     world_size: int, wall_time: float) -> dict:
    """The checkpoint of ``step`` (``ema``: a WeightAverage or None; ``rngs``: every rank's RNG state)."""
    return {
        "format": FORMAT, "step": step, "config": cfg.to_dict(),
        "model": model.state_dict(), "optimizer": opt.state_dict(),
        "ema": ema.model.state_dict() if ema is not None else None,
        "schedule": {"lr": cfg.lr_at(max(0, step - 1)), "step": step},
        "rng": rngs, "best": json.dumps(record.best, default=_jd),
        "train_rows": json.dumps(record.train_rows, default=_jd),
        "val_rows": json.dumps(record.val_rows, default=_jd), "world_size": world_size,
        "wall_time": wall_time,
    }


# ------------------------------------------------------------------------------------------------- resume
def open_resume(ckpt_path: Path, cfg: TrainConfig, resume: bool, say) -> tuple[dict | None, TrainConfig]:
    """The checkpoint to resume from (None: a new run) and the config to run with: the checkpoint's, with
    the total number of steps of ``cfg``."""
    if not (resume and ckpt_path.exists()):
        if resume:
            say(f"no checkpoint in {ckpt_path.parent}; starting a new run")
        return None, cfg
    state = load_checkpoint(ckpt_path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError("not a needletrack training checkpoint", ckpt_path)
    missing = [k for k in _NEEDED if k not in state]
    if missing or not isinstance(state["config"], dict):
        raise InputError(f"damaged training checkpoint (lacks {', '.join(missing) or 'a config'})", ckpt_path)
    if state["config"].get("steps") != cfg.steps:
        say(f"total steps changed from {state['config'].get('steps')} to {cfg.steps} on resume")
    try:   # checkpoints written before a key existed (e.g. ema) get its default
        saved = TrainConfig.from_dict(dict(state["config"], steps=cfg.steps))
    except InputError as e:
        raise InputError(f"damaged training checkpoint (its config: {e})", ckpt_path) from None
    if saved != cfg:
        say("config differs from the checkpoint's; continuing with the checkpoint's settings")
    return state, saved


def restore(state: dict, ckpt_path: Path, model: nn.Module, opt, ema, rank: int, world_size: int, seed: int,
            say) -> RunRecord:
    """Load model, optimiser, weight average and RNG state from ``state``; returns the run's record."""
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.model.load_state_dict(state["ema"])
        record = RunRecord(step=int(state["step"]), best=json.loads(state["best"]),
                           train_rows=json.loads(state["train_rows"]), val_rows=json.loads(state["val_rows"]),
                           wall_before=float(state.get("wall_time", 0.0)))
        rngs = list(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        detail = (str(e).splitlines() or [""])[0][:160]
        raise InputError(f"damaged training checkpoint ({type(e).__name__}: {detail})", ckpt_path) from None
    if len(rngs) == world_size:
        set_rng_state(rngs[rank])
    else:
        say(f"checkpoint was written by {len(rngs)} processes, now {world_size}: RNG streams re-seeded")
        seed_all(seed, rank, record.step)
    return record


# ------------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "python": random.getstate()}
    ns = np.random.get_state()
    st["numpy"] = {"keys": torch.from_numpy(ns[1].astype(np.int64)), "pos": int(ns[2]),
                   "has_gauss": int(ns[3]), "cached": float(ns[4])}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = st["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in st and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(st["cuda"])
        except RuntimeError:  # a different number of GPUs: keep the fresh state
            pass


def seed_all(seed: int, rank: int, step: int) -> None:
    """Per-rank streams for any randomness in the model (torch, random, numpy)."""
    s = int(np.random.SeedSequence([seed, rank, step, 7]).generate_state(1, dtype=np.uint32)[0])
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s)


def _jd(o):
    if isinstance(o, (np.generic,)):
        return o.item()
    raise TypeError(type(o).__name__)
