"""Training the model rows of the paper's tables (``needletrack tables``; the tables themselves, their rows,
scoring and rendering are ``needletrack.eval.tables``).

Every model row of every table at a scale is trained by the same loop (``needletrack.train.loop.train``) on
the same simulated clip stream (same seed) for the same number of steps, with the scale's ``train`` section
(``configs/tables/<scale>.yaml``) as its training config. A row's run lives in ``DIR/runs/<row key>/`` and
is reused once finished; an interrupted run resumes.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Callable

from needletrack.errors import NeedletrackError
from needletrack.resources import source_root

# relative data paths of a config resolve against the repository (an installed wheel: the working directory)
REPO_ROOT = source_root() or Path.cwd()


def train_config(scale_cfg: dict, model_cfg) -> dict:
    """The training config (``TrainConfig`` form, as a dict) of a row: the scale's ``train`` + model + size.
    With ``model_cfg`` None it is the part shared by every row (what the rows' cache keys hash)."""
    t = copy.deepcopy(scale_cfg["train"])
    t["size"] = int(scale_cfg["input_size"])
    if model_cfg is not None:
        t["model"] = model_cfg.to_dict()
    return t


def repo_path(p):
    """A relative data path of a tables config, resolved against the repository root (so results do not
    depend on the working directory); absolute paths and None pass through."""
    if not p:
        return p
    q = Path(p)
    return str(q if q.is_absolute() else (REPO_ROOT / q).resolve())


def resolve_paths(tcfg: dict) -> dict:
    """Resolve the data folders of a training config against the repository root (in place; returned)."""
    for src in (tcfg.get("data") or {}).get("sources") or []:
        for k in ("backgrounds", "dir", "root"):
            if src.get(k):
                src[k] = repo_path(src[k])
    val = tcfg.setdefault("val", {})
    val["backgrounds"] = repo_path(val.get("backgrounds", "../shared/data/us_backgrounds"))
    return tcfg


def ensure_trained(row, scale_cfg: dict, out_dir: Path, log: Callable[[str], None]) -> Path:
    """Train a model row (``row.key``, ``row.label``, ``row.model_cfg``), or reuse its finished run; returns
    the weights file after the full budget."""
    run = out_dir / "runs" / row.key
    weights = run / "last.safetensors"
    summary = run / "summary.json"
    if summary.exists() and weights.exists():
        try:
            if json.loads(summary.read_text()).get("finished"):
                return weights
        except ValueError:
            pass
    from needletrack.train import loop   # torch: imported when a row is trained

    tcfg = resolve_paths(train_config(scale_cfg, row.model_cfg))
    log(f"training {row.label} ({row.model_cfg.name}) for {tcfg['steps']} steps -> {run}")
    t0 = time.time()
    res = loop.train(tcfg, run, resume=True, device="cpu" if scale_cfg["scale"] != "full" else "auto",
                     progress=False, command=f"needletrack tables ({scale_cfg['scale']})",
                     log=lambda m: log(f"  [{row.label}] {m}"))
    if not res.get("finished"):
        raise NeedletrackError(f"training of row {row.label!r} stopped before its budget ({res.get('stopped')}); "
                               "run the same command again to resume it", run)
    log(f"  [{row.label}] trained in {time.time() - t0:.0f} s")
    return weights


def train_summary(run: Path) -> dict | None:
    """The training figures of a row's run that its table reports (None before it has run)."""
    p = run / "summary.json"
    if not p.exists():
        return None
    s = json.loads(p.read_text())
    return {"steps": s.get("steps"), "wall_time_s": s.get("wall_time_s"), "batch_size": s.get("batch_size"),
            "size": s.get("size"), "device": s.get("device_name") or s.get("device"),
            "throughput_clips_per_s": s.get("throughput_clips_per_s")}
