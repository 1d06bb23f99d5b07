"""What a training run writes about itself: ``train_log.csv``, ``val_log.csv``, ``val_curve.png``, the
validation line it prints, and ``summary.json``. Every file is written atomically."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from needletrack.utils import write_text_atomic

TRAIN_COLS = ["step", "lr", "loss", "bce", "bootstrap_bce", "dice", "grad_norm", "step_s", "data_s",
              "clips_per_s", "elapsed_s"]
VAL_COLS = ["step", "iou", "dice", "precision", "recall", "per_frame_iou", "empty_frame_accuracy",
            "tip_error_px", "angle_error_deg"]
FILES = {"checkpoint": "checkpoint.pt", "train_log": "train_log.csv", "val_log": "val_log.csv",
         "val_curve": "val_curve.png", "config": "config.yaml"}


def write_csv(path: Path, cols: list[str], rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]))
                    for k in cols})
    write_text_atomic(path, buf.getvalue())


def write_val_log(path: Path, val_rows: list[dict]) -> None:
    """val_log.csv: the fixed columns, then one ``<group>_iou`` column per validation group."""
    extra_cols = sorted({k for r in val_rows for k in r} - set(VAL_COLS))
    write_csv(path, VAL_COLS + extra_cols, val_rows)


def val_row(step: int, res: dict) -> dict:
    """The val_log.csv row of one validation (``res``: ``evaluate_model``'s result)."""
    ov = res["overall"]
    row = {"step": step, **{k: ov.get(k) for k in VAL_COLS if k != "step"}}
    for g, r in res.items():
        if g != "overall":
            row[f"{g}_iou"] = r["iou"]
    return row


def val_message(step: int, res: dict) -> str:
    ov = res["overall"]
    ea = ov["empty_frame_accuracy"]
    msg = (f"step {step}: val IoU {ov['iou']:.3f} Dice {ov['dice']:.3f} "
           f"empty-acc {ea if ea is None else round(ea, 3)}")
    extra = [f"{g} IoU {r['iou']:.3f}" for g, r in res.items() if g != "overall"]
    return msg + (" (" + ", ".join(extra) + ")" if extra else "")


def plot_val_curve(path: Path, val_rows: list[dict], train_rows: list[dict], title: str = "") -> None:
    from needletrack.io.figures import pyplot, save_png

    fig, ax = pyplot().subplots(figsize=(7, 4.2), dpi=110)
    if val_rows:
        steps = [r["step"] for r in val_rows]
        for key, label in (("iou", "pooled IoU"), ("dice", "pooled Dice"),
                           ("empty_frame_accuracy", "empty-frame accuracy")):
            ys = [r.get(key) for r in val_rows]
            if any(y is not None for y in ys):
                ax.plot(steps, [np.nan if y is None else y for y in ys], marker="o", ms=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("validation (tracking from the first mask)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if train_rows:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], color="0.6", lw=0.8,
                 label="train loss")
        ax2.set_ylabel("train loss")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="center right", fontsize=8)
    else:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    save_png(fig, path)


def open_tensorboard(out: Path, wanted: bool):
    """A tensorboard SummaryWriter in OUT/tb, or None (not wanted, or tensorboard not installed: CSV only)."""
    if not wanted:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(out / "tb"))
    except Exception:  # noqa: BLE001 - tensorboard not installed: CSV only
        return None


def mean(xs) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return round(sum(xs) / len(xs), 4) if xs else None


def summary_dict(*, finished: bool, stopped, step: int, cfg, mcfg, size: int, wall: float, command: str,
                 dist, dev, device_name: str, amp_dtype, num_workers: int, digests: list, record) -> dict:
    """summary.json (also ``train()``'s return value)."""
    best, train_rows, val_rows = record.best, record.train_rows, record.val_rows
    return {
        "finished": finished, "stopped": stopped, "steps": step, "total_steps": cfg.steps,
        "wall_time_s": round(wall, 1), "seed": cfg.seed, "command": command, "model": mcfg.name,
        "model_config": mcfg.to_dict(), "size": size, "batch_size": cfg.batch_size,
        "world_size": dist.world_size, "device": str(dev), "device_name": device_name,
        "amp": "bf16" if amp_dtype else "off", "num_workers": num_workers,
        "replica_digests": digests, "replicas_identical": len(set(digests)) == 1,
        "best": {"step": best["step"], "val": best["metrics"]},
        "last_val": val_rows[-1] if val_rows else None,
        "throughput_clips_per_s": mean([r["clips_per_s"] for r in train_rows[-20:]]),
        "data_wait_share": mean([r["data_s"] / r["step_s"] for r in train_rows[-20:] if r["step_s"]]),
        "files": {"best": "best.safetensors" if best["step"] is not None else None, "last": "last.safetensors",
                  **FILES},
        "config": cfg.to_dict(),
    }
