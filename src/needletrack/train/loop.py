"""The training loop behind ``needletrack train CONFIG [--out DIR] [--resume]`` (also under torchrun).

Outputs in DIR: ``checkpoint.pt`` (everything needed to resume exactly), ``last.safetensors`` and
``best.safetensors`` (weights via ``needletrack.models.save_model``; best by pooled validation IoU),
``train_log.csv``, ``val_log.csv``, ``val_curve.png``, ``summary.json``, ``config.yaml`` (resolved).
Every file is written atomically.

The pieces: ``config`` (``TrainConfig``), ``data_loader`` (sources, clips, DataLoader), ``model_setup``
(model, optimiser, weight average, DDP), ``step`` (one optimiser step and the log's running means),
``checkpoint`` (save and exact resume), ``validation`` (tracking the validation split), ``logs`` (CSV, plot,
summary). This module runs them in order.

Exact resume: the data of step k is a pure function of (seed, k, rank) (``StepBatchSampler`` +
per-sample seeding), and the checkpoint holds model, optimiser, schedule position, step and every RNG
state (per rank), so an interrupted-and-resumed run equals an uninterrupted one bit for bit on CPU.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import torch

from needletrack.errors import InputError
from needletrack.train import distributed as D
from needletrack.train.checkpoint import (CKPT, RunRecord, checkpoint_state, load_checkpoint, open_resume,
                                          restore, rng_state, save_checkpoint, save_weights, seed_all,
                                          weights_meta)
from needletrack.train.config import TrainConfig, load_config
from needletrack.train.data_loader import auto_workers, build_loader
from needletrack.train.logs import (TRAIN_COLS, open_tensorboard, plot_val_curve, summary_dict, val_message,
                                    val_row, write_csv, write_val_log)
from needletrack.train.model_setup import (WeightAverage, amp_dtype_for, build_train_model, make_optimizer,
                                           pick_device, rollout_module, set_train_mode, weights_digest)
from needletrack.train.step import StepStats, train_step
from needletrack.train.validation import build_val_set, evaluate_model
from needletrack.utils import write_json_atomic, write_text_atomic

# names that callers imported from here before the split
__all__ = ["train", "load_checkpoint", "auto_workers", "pick_device", "WeightAverage", "weights_digest", "CKPT"]


class _Stopper:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint after the current step and exits.
    A second signal interrupts at once."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *a):
        for sig, h in self._old.items():
            signal.signal(sig, h)


def train(config: str | os.PathLike | dict | TrainConfig | None, out_dir: str | os.PathLike, resume: bool = False,
          device: str = "auto", steps: int | None = None, stop_after: int | None = None,
          max_minutes: float | None = None, command: str | None = None, progress: bool = True,
          log=None) -> dict:
    """Train per ``config`` (a YAML path, a dict in the same form, or a ``TrainConfig``) into ``out_dir``;
    returns the summary dict (also in OUT/summary.json).

    ``steps`` overrides the config's total; ``stop_after`` stops after that many steps of THIS run (then
    ``resume`` continues); ``max_minutes`` stops (with a checkpoint) when the run's wall time passes it."""
    t_start = time.time()
    over = {"steps": steps} if steps else None
    if isinstance(config, TrainConfig):
        cfg = TrainConfig.from_dict(config.to_dict(), over)
    elif isinstance(config, dict):
        cfg = TrainConfig.from_dict(config, over)
    else:
        cfg = load_config(config, over)
    out = Path(out_dir)
    dev = pick_device(device)
    dist = D.init_distributed(dev.type)
    if dist.enabled and dev.type == "cuda":
        dev = torch.device("cuda", dist.local_rank)
    main = dist.is_main
    say = (log or (lambda m: print(f"needletrack train: {m}", file=sys.stderr, flush=True))) if main else (lambda m: None)
    try:
        return _train(cfg, out, resume, dev, dist, stop_after, max_minutes, command, progress and main, say, t_start)
    finally:
        D.cleanup(dist)


def _train(cfg: TrainConfig, out: Path, resume, dev, dist, stop_after, max_minutes, command, progress, say,
           t_start) -> dict:
    ckpt_path = out / CKPT
    main = dist.is_main
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a folder", out)
    if main and ckpt_path.exists() and not resume:
        raise InputError("already holds a training checkpoint; pass --resume to continue it or choose another --out",
                         out)
    state, cfg = open_resume(ckpt_path, cfg, resume, say)

    mcfg = cfg.model_config()
    size = int(cfg.size or mcfg.input_size)
    freeze_bn = bool(getattr(mcfg, "freeze_bn", False))
    amp_dtype = amp_dtype_for(cfg.amp, dev)

    # --- model, optimiser, weight average (small CPU batches make single weights noisy: validated, saved and
    # shipped when on), and where a resumed run stood ------------------------------------------------------
    model = build_train_model(cfg, mcfg, dev, fresh=state is None, say=say)
    opt = make_optimizer(model, cfg.optim)
    ema = WeightAverage(model, cfg.ema) if cfg.ema else None
    shown = ema.model if ema is not None else model
    total = cfg.steps
    if state is not None:
        rec = restore(state, ckpt_path, model, opt, ema, dist.rank, dist.world_size, cfg.seed, say)
        say(f"resumed from step {rec.step} of {total}")
    else:
        rec = RunRecord()
        seed_all(cfg.seed, dist.rank, 0)  # per-rank streams for any randomness in the model
    start = rec.step
    net = rollout_module(model, cfg, dist, dev, size, amp_dtype)

    # --- data -------------------------------------------------------------------------------------------------
    end = total if stop_after is None else min(total, start + int(stop_after))
    loader, nw = build_loader(cfg, size, dist, dev, start, end, say)
    bsz = cfg.batch_size

    val_set = None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        import yaml

        write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        t0 = time.time()
        val_set = build_val_set(cfg.val, (size, size), out / "val" if cfg.val.save else None)
        say(f"validation split: {len(val_set)} sequences ({time.time() - t0:.1f} s to build); "
            f"{nw} data workers; batch {bsz} x {dist.world_size} process(es); device {dev}; "
            f"AMP {'bf16' if amp_dtype else 'off'}")
    tb = open_tensorboard(out, main and cfg.tensorboard)
    curve_title = f"{mcfg.name} @ {size}px, seed {cfg.seed}"

    def validate_and_save(step: int) -> None:
        if main:
            res = evaluate_model(shown, val_set, cfg.val, dev, autocast_dtype=amp_dtype)
            set_train_mode(model, freeze_bn)
            rec.val_rows.append(val_row(step, res))
            ov = res["overall"]
            if tb is not None:
                for k in ("iou", "dice", "empty_frame_accuracy"):
                    if ov.get(k) is not None:
                        tb.add_scalar(f"val/{k}", ov[k], step)
            say(val_message(step, res))
            if ov["iou"] > rec.best["iou"]:
                rec.best = {"step": step, "iou": ov["iou"], "metrics": res}
                save_weights(shown, out / "best.safetensors", weights_meta(cfg, step, res))
            write_val_log(out / "val_log.csv", rec.val_rows)
            plot_val_curve(out / "val_curve.png", rec.val_rows, rec.train_rows, curve_title)
        D.barrier(dist)

    def checkpoint(step: int) -> None:
        rngs = D.gather_objects(dist, rng_state())
        if main:
            save_checkpoint(out / CKPT, checkpoint_state(step, cfg, model, opt, ema, rec, rngs, dist.world_size,
                                                         rec.wall_before + time.time() - t_start))
            save_weights(shown, out / "last.safetensors", weights_meta(cfg, step, None))
        D.barrier(dist)

    # --- loop ---------------------------------------------------------------------------------------------
    set_train_mode(model, freeze_bn)
    params = [p for p in model.parameters() if p.requires_grad]
    grad_clip = float(cfg.grad_clip or 0.0)
    log_every, val_every, ck_every = cfg.log_every, cfg.val.every, cfg.checkpoint_every
    step = start
    stats = StepStats()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, unit="it", dynamic_ncols=True, file=sys.stderr, desc="train")
    stopped = None
    t_run = time.time()
    t_prev = time.time()
    with _Stopper() as stopper:
        batches = iter(loader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except RuntimeError:
                if stopper.requested:  # Ctrl-C also reached the DataLoader workers
                    stopped = "interrupted"
                    break
                raise
            t_data = time.time() - t_prev
            lr = cfg.lr_at(step)
            loss, parts, gn = train_step(net, opt, params, batch, lr, step, cfg.loss, grad_clip, dev, amp_dtype)
            step += 1
            if ema is not None:
                ema.update(model, step)
            t_now = time.time()
            stats.add(loss, parts, gn, t_data, t_now - t_prev)
            t_prev = t_now
            if step % log_every == 0 or step == end:
                row = stats.row(step, lr, bsz * dist.world_size, rec.wall_before + time.time() - t_start, dist, dev)
                if main:
                    rec.train_rows.append(row)
                    write_csv(out / "train_log.csv", TRAIN_COLS, rec.train_rows)
                    if tb is not None:
                        tb.add_scalar("train/loss", row["loss"], step)
                        tb.add_scalar("train/lr", lr, step)
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}", data=f"{100 * stats.data_share():.0f}%")
                stats = StepStats()
            if bar is not None:
                bar.update(1)
            if val_every and step % val_every == 0 and step < total:
                validate_and_save(step)
            if step < end and ck_every and step % ck_every == 0:
                checkpoint(step)
            over_time = max_minutes is not None and (time.time() - t_run) / 60.0 >= max_minutes
            if D.any_flag(dist, stopper.requested or over_time, dev) and step < end:
                stopped = "interrupted" if stopper.requested else "time limit"
                break
            t_prev = time.time()
    if bar is not None:
        bar.close()
    finished = step >= total
    if finished and not (rec.val_rows and rec.val_rows[-1]["step"] == step):
        validate_and_save(step)
    checkpoint(step)
    wall = rec.wall_before + time.time() - t_start
    # DDP keeps parameters identical; BatchNorm statistics are broadcast from rank 0 at each forward, so
    # re-broadcast them once more after the last step to leave every replica exactly equal
    D.broadcast_buffers(dist, model)
    sums = D.gather_objects(dist, weights_digest(model, buffers=True))
    summary = summary_dict(
        finished=finished, stopped=stopped, step=step, cfg=cfg, mcfg=mcfg, size=size, wall=wall,
        command=command or " ".join(sys.argv), dist=dist, dev=dev,
        device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", amp_dtype=amp_dtype,
        num_workers=nw, digests=sums, record=rec)
    if main:
        plot_val_curve(out / "val_curve.png", rec.val_rows, rec.train_rows, curve_title)
        write_json_atomic(out / "summary.json", summary)
        if tb is not None:
            tb.close()
        if finished:
            b = f"; best val IoU {rec.best['iou']:.3f} at step {rec.best['step']}" if rec.best["step"] is not None else ""
            say(f"finished {step} steps in {wall / 60:.1f} min{b}; outputs in {out}")
        else:
            say(f"stopped at step {step}/{total} ({stopped or 'stop-after'}); continue with --resume")
    D.barrier(dist)
    return summary
