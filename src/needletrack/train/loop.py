"""The training loop behind ``needletrack train CONFIG [--out DIR] [--resume]`` (also under torchrun).

Outputs in DIR: ``checkpoint.pt`` (everything needed to resume exactly), ``last.safetensors`` and
``best.safetensors`` (weights via ``needletrack.models.save_model``; best by pooled validation IoU),
``train_log.csv``, ``val_log.csv``, ``val_curve.png``, ``summary.json``, ``config.yaml`` (resolved).
Every file is written atomically.

Exact resume: the data of step k is a pure function of (seed, k, rank) (``StepBatchSampler`` +
per-sample seeding), and the checkpoint holds model, optimiser, schedule position, step and every RNG
state (per rank), so an interrupted-and-resumed run equals an uninterrupted one bit for bit on CPU.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from needletrack.errors import InputError, NeedletrackError
from needletrack.train import distributed as D
from needletrack.train.config import load_config, model_config, schedule_lr
from needletrack.utils import atomic_path, write_json_atomic, write_text_atomic

CKPT = "checkpoint.pt"
TRAIN_COLS = ["step", "lr", "loss", "bce", "bootstrap_bce", "dice", "grad_norm", "step_s", "data_s",
              "clips_per_s", "elapsed_s"]
VAL_COLS = ["step", "iou", "dice", "precision", "recall", "per_frame_iou", "empty_frame_accuracy",
            "tip_error_px", "angle_error_deg"]


# ------------------------------------------------------------------------------------------------- helpers
def auto_workers(local_world: int = 1) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(0, min(cores // max(1, local_world) - 1, 12))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise NeedletrackError("--device cuda asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise NeedletrackError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """``model.train()``, with BatchNorm layers kept in eval mode (frozen statistics) when ``freeze_bn``."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def freeze_bn_params(model: nn.Module) -> int:
    n = 0
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for p in m.parameters():
                p.requires_grad_(False)
                n += 1
    return n


def make_optimizer(model: nn.Module, ocfg: dict) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or "pos_bias" in name or "rel_pos" in name
         else decay).append(p)
    wd = float(ocfg.get("weight_decay", 0.0))
    groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
    kw = dict(lr=float(ocfg["lr"]), betas=tuple(float(b) for b in ocfg["betas"]), eps=float(ocfg["eps"]))
    if ocfg["name"] == "adamw":
        return torch.optim.AdamW(groups, **kw)
    return torch.optim.Adam(groups, **kw)  # Adam: weight_decay is L2 added to the gradient


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "python": random.getstate()}
    ns = np.random.get_state()
    st["numpy"] = {"keys": torch.from_numpy(ns[1].astype(np.int64)), "pos": int(ns[2]),
                   "has_gauss": int(ns[3]), "cached": float(ns[4])}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
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


def _write_csv(path: Path, cols: list[str], rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]))
                    for k in cols})
    write_text_atomic(path, buf.getvalue())


def plot_val_curve(path: Path, val_rows: list[dict], train_rows: list[dict], title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _resolve_sources(cfg: dict, log):
    from needletrack.data.clips import build_source

    out = []
    for spec in cfg["data"]["sources"]:
        try:
            s, note = build_source(spec, default_gap=tuple(cfg["clip"]["gap"]))
        except ModuleNotFoundError as e:
            raise NeedletrackError(f"clip source {spec.get('kind')!r} needs {e.name}, which is not installed") from None
        except ValueError as e:
            raise InputError(f"invalid data source {spec!r}: {e}") from None
        if note:
            log(note)
        if s is not None:
            out.append(s)
    if not out:
        raise InputError("no usable data source (every configured source was absent)")
    return out


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


# ------------------------------------------------------------------------------------------------- train
def train(config: str | os.PathLike | dict | None, out_dir: str | os.PathLike, resume: bool = False,
          device: str = "auto", steps: int | None = None, stop_after: int | None = None,
          max_minutes: float | None = None, command: str | None = None, progress: bool = True,
          log=None) -> dict:
    """Train per ``config`` into ``out_dir``; returns the summary dict (also in OUT/summary.json).

    ``steps`` overrides the config's total; ``stop_after`` stops after that many steps of THIS run (then
    ``resume`` continues); ``max_minutes`` stops (with a checkpoint) when the run's wall time passes it."""
    t_start = time.time()
    if isinstance(config, dict):
        import yaml
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
            yaml.safe_dump(config, fh)
        try:
            cfg = load_config(fh.name, {"steps": steps} if steps else None)
        finally:
            os.unlink(fh.name)
    else:
        cfg = load_config(config, {"steps": steps} if steps else None)
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


def _train(cfg, out: Path, resume, dev, dist, stop_after, max_minutes, command, progress, say, t_start) -> dict:
    from needletrack.data.augment import AugmentConfig
    from needletrack.data.clips import ClipDataset, StepBatchSampler, worker_init
    from needletrack.models import build_model, load_model
    from needletrack.train.losses import LossConfig, compute_loss
    from needletrack.train.rollout import Rollout
    from needletrack.train.validation import build_val_set, evaluate_model

    ckpt_path = out / CKPT
    main = dist.is_main
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a folder", out)
    if main and ckpt_path.exists() and not resume:
        raise InputError("already holds a training checkpoint; pass --resume to continue it or choose another --out",
                         out)
    state = None
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        if not isinstance(state, dict) or state.get("format") != "needletrack-train-1":
            raise InputError("not a needletrack training checkpoint", ckpt_path)
        need = ("config", "model", "optimizer", "step", "best", "train_rows", "val_rows", "rng")
        missing = [k for k in need if k not in state]
        if missing or not isinstance(state["config"], dict):
            raise InputError(f"damaged training checkpoint (lacks {', '.join(missing) or 'a config'})", ckpt_path)
        if state["config"].get("steps") != cfg["steps"]:
            say(f"total steps changed from {state['config'].get('steps')} to {cfg['steps']} on resume")
        cfg_saved = dict(state["config"], steps=cfg["steps"])
        cfg_saved.setdefault("ema", None)          # checkpoints written before the weight average existed
        if cfg_saved != cfg:
            say("config differs from the checkpoint's; continuing with the checkpoint's settings")
        cfg = cfg_saved
    elif resume:
        say(f"no checkpoint in {out}; starting a new run")

    mcfg = model_config(cfg)
    if cfg["freeze_bn"] is not None and hasattr(mcfg, "freeze_bn"):
        mcfg = mcfg.replace(freeze_bn=bool(cfg["freeze_bn"]))
    size = int(cfg["size"] or mcfg.input_size)
    freeze_bn = bool(getattr(mcfg, "freeze_bn", False))
    amp = cfg["amp"]
    amp_dtype = torch.bfloat16 if (amp == "bf16" or (amp == "auto" and dev.type == "cuda")) else None
    seed = int(cfg["seed"])

    # --- model (identical initialisation on every rank; DDP also broadcasts rank 0's) ------------------
    torch.manual_seed(seed)
    model = build_model(mcfg)
    if cfg["init"] and state is None:
        src = load_model(cfg["init"], device="cpu")
        missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
        say(f"initialised from {cfg['init']} ({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    if freeze_bn:
        freeze_bn_params(model)
    model.to(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    opt = make_optimizer(model, cfg["optim"])
    # weight average (small CPU batches make single weights noisy): validated, saved and shipped when on
    ema = WeightAverage(model, float(cfg["ema"])) if cfg["ema"] else None
    shown = ema.model if ema is not None else model
    loss_cfg = LossConfig.from_dict(cfg["loss"])
    total = int(cfg["steps"])
    start = 0
    best = {"step": None, "iou": -1.0, "metrics": None}
    train_rows: list[dict] = []
    val_rows: list[dict] = []
    wall_before = 0.0
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if ema is not None:
                ema.model.load_state_dict(state["ema"])
            start = int(state["step"])
            best = json.loads(state["best"])
            train_rows = json.loads(state["train_rows"])
            val_rows = json.loads(state["val_rows"])
            wall_before = float(state.get("wall_time", 0.0))
            rngs = list(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            detail = (str(e).splitlines() or [""])[0][:160]
            raise InputError(f"damaged training checkpoint ({type(e).__name__}: {detail})", ckpt_path) from None
        if len(rngs) == dist.world_size:
            _set_rng_state(rngs[dist.rank])
        else:
            say(f"checkpoint was written by {len(rngs)} processes, now {dist.world_size}: RNG streams re-seeded")
            _seed_all(seed, dist.rank, start)
        say(f"resumed from step {start} of {total}")
    else:
        _seed_all(seed, dist.rank, 0)  # per-rank streams for any randomness in the model

    rollout = Rollout(model, detach_memory=bool(cfg["detach_memory"]))
    net = rollout
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(rollout, device_ids=[dev.index] if dev.type == "cuda" else None,
                  find_unused_parameters=_has_unused(rollout, cfg, size, dev, amp_dtype))

    # --- data ------------------------------------------------------------------------------------------
    sources = _resolve_sources(cfg, say)
    bsz = int(cfg["batch_size"])
    aug = AugmentConfig.from_dict(cfg["augment"])
    dataset = ClipDataset(sources, size, n_frames=int(cfg["clip"]["frames"]), seed=seed, augment=aug,
                          reverse_prob=float(cfg["clip"]["reverse_prob"]), samples_per_step=bsz * dist.world_size,
                          as_uint8=True)
    nw = cfg["data"]["num_workers"]
    nw = auto_workers(dist.local_world_size) if nw is None else int(nw)
    end = total if stop_after is None else min(total, start + int(stop_after))
    sampler = StepBatchSampler(bsz, start, end, dist.rank, dist.world_size)
    loader_kw = dict(batch_sampler=sampler, num_workers=nw, pin_memory=dev.type == "cuda",
                     generator=torch.Generator().manual_seed(seed))
    if nw > 0:
        # spawned, not forked: forked workers hung a 12-worker run on the H100 machine (most likely OpenCV's
        # thread pool, which the main process has used to build the validation split, is not fork-safe)
        loader_kw.update(worker_init_fn=worker_init, prefetch_factor=int(cfg["data"]["prefetch_factor"]),
                         persistent_workers=False, multiprocessing_context=cfg["data"]["start_method"])
    loader = torch.utils.data.DataLoader(dataset, **loader_kw)

    val_set = None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        import yaml

        write_text_atomic(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
        t0 = time.time()
        val_set = build_val_set(cfg["val"], (size, size), out / "val" if cfg["val"]["save"] else None)
        say(f"validation split: {len(val_set)} sequences ({time.time() - t0:.1f} s to build); "
            f"{nw} data workers; batch {bsz} x {dist.world_size} process(es); device {dev}; "
            f"AMP {'bf16' if amp_dtype else 'off'}")

    tb = None
    if main and cfg["tensorboard"]:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(out / "tb"))
        except Exception:  # noqa: BLE001 - tensorboard not installed: CSV only
            tb = None

    def lr_at(step: int) -> float:
        return float(cfg["optim"]["lr"]) * schedule_lr(cfg, step)

    def validate_and_save(step: int, final: bool) -> None:
        nonlocal best
        if main:
            res = evaluate_model(shown, val_set, cfg["val"], dev, autocast_dtype=amp_dtype)
            set_train_mode(model, freeze_bn)
            ov = res["overall"]
            row = {"step": step, **{k: ov.get(k) for k in VAL_COLS if k != "step"}}
            for g, r in res.items():
                if g != "overall":
                    row[f"{g}_iou"] = r["iou"]
            val_rows.append(row)
            if tb is not None:
                for k in ("iou", "dice", "empty_frame_accuracy"):
                    if ov.get(k) is not None:
                        tb.add_scalar(f"val/{k}", ov[k], step)
            msg = (f"step {step}: val IoU {ov['iou']:.3f} Dice {ov['dice']:.3f} "
                   f"empty-acc {ov['empty_frame_accuracy'] if ov['empty_frame_accuracy'] is None else round(ov['empty_frame_accuracy'], 3)}")
            extra = [f"{g} IoU {r['iou']:.3f}" for g, r in res.items() if g != "overall"]
            say(msg + (" (" + ", ".join(extra) + ")" if extra else ""))
            if ov["iou"] > best["iou"]:
                best = {"step": step, "iou": ov["iou"], "metrics": res}
                save_weights(shown, out / "best.safetensors", _weights_meta(cfg, step, res))
            extra_cols = sorted({k for r in val_rows for k in r} - set(VAL_COLS))
            _write_csv(out / "val_log.csv", VAL_COLS + extra_cols, val_rows)
            plot_val_curve(out / "val_curve.png", val_rows, train_rows,
                           f"{mcfg.name} @ {size}px, seed {cfg['seed']}")
        D.barrier(dist)

    def checkpoint(step: int) -> None:
        rngs = D.gather_objects(dist, _rng_state())
        if main:
            save_checkpoint(out / CKPT, {
                "format": "needletrack-train-1", "step": step, "config": cfg,
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "ema": ema.model.state_dict() if ema is not None else None,
                "schedule": {"lr": lr_at(max(0, step - 1)), "step": step},
                "rng": rngs, "best": json.dumps(best, default=_jd), "train_rows": json.dumps(train_rows, default=_jd),
                "val_rows": json.dumps(val_rows, default=_jd), "world_size": dist.world_size,
                "wall_time": wall_before + time.time() - t_start,
            })
            save_weights(shown, out / "last.safetensors", _weights_meta(cfg, step, None))
        D.barrier(dist)

    # --- loop --------------------------------------------------------------------------------------------
    set_train_mode(model, freeze_bn)
    params = [p for p in model.parameters() if p.requires_grad]
    clip = float(cfg["grad_clip"] or 0.0)
    log_every, val_every, ck_every = int(cfg["log_every"]), int(cfg["val"]["every"]), int(cfg["checkpoint_every"])
    step = start
    acc = {"n": 0, "loss": 0.0, "parts": {}, "gn": 0.0, "data_s": 0.0, "step_s": 0.0}
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
            frames = batch["frames"].to(dev, non_blocking=True).float().div_(255.0)
            masks = batch["masks"].to(dev, non_blocking=True).float()
            lr = lr_at(step)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = net(frames, masks[:, 0])
            loss, parts = compute_loss(logits, masks[:, 1:], loss_cfg, step)
            if not torch.isfinite(loss):
                raise NeedletrackError(f"loss became {loss.item()} at step {step + 1}; lower optim.lr or "
                                       "raise schedule.warmup")
            loss.backward()
            gn = (torch.nn.utils.clip_grad_norm_(params, clip) if clip > 0
                  else torch.sqrt(sum((p.grad.float() ** 2).sum() for p in params if p.grad is not None)))
            opt.step()
            step += 1
            if ema is not None:
                ema.update(model, step)
            t_now = time.time()
            acc["n"] += 1
            acc["loss"] += float(loss.detach())
            for k, v in parts.items():
                acc["parts"][k] = acc["parts"].get(k, 0.0) + float(v.detach())
            acc["gn"] += float(gn)
            acc["data_s"] += t_data
            acc["step_s"] += t_now - t_prev
            t_prev = t_now
            if step % log_every == 0 or step == end:
                n = acc["n"]
                vals = D.all_mean(dist, [acc["loss"] / n] + [acc["parts"].get(k, 0.0) / n for k in
                                                              ("bce", "bootstrap_bce", "dice")], dev)
                row = {"step": step, "lr": lr, "loss": vals[0], "grad_norm": acc["gn"] / n,
                       "step_s": acc["step_s"] / n, "data_s": acc["data_s"] / n,
                       "clips_per_s": n * bsz * dist.world_size / max(acc["step_s"], 1e-9),
                       "elapsed_s": wall_before + time.time() - t_start}
                for k, v in zip(("bce", "bootstrap_bce", "dice"), vals[1:]):
                    if k in acc["parts"]:
                        row[k] = v
                if main:
                    train_rows.append(row)
                    _write_csv(out / "train_log.csv", TRAIN_COLS, train_rows)
                    if tb is not None:
                        tb.add_scalar("train/loss", row["loss"], step)
                        tb.add_scalar("train/lr", lr, step)
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}",
                                    data=f"{100 * acc['data_s'] / max(acc['step_s'], 1e-9):.0f}%")
                acc = {"n": 0, "loss": 0.0, "parts": {}, "gn": 0.0, "data_s": 0.0, "step_s": 0.0}
            if bar is not None:
                bar.update(1)
            if val_every and step % val_every == 0 and step < total:
                validate_and_save(step, False)
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
    if finished and not (val_rows and val_rows[-1]["step"] == step):
        validate_and_save(step, True)
    checkpoint(step)
    wall = wall_before + time.time() - t_start
    # DDP keeps parameters identical; BatchNorm statistics are broadcast from rank 0 at each forward, so
    # re-broadcast them once more after the last step to leave every replica exactly equal
    D.broadcast_buffers(dist, model)
    sums = D.gather_objects(dist, weights_digest(model, buffers=True))
    summary = {
        "finished": finished, "stopped": stopped, "steps": step, "total_steps": total, "wall_time_s": round(wall, 1),
        "seed": cfg["seed"], "command": command or " ".join(sys.argv), "model": mcfg.name,
        "model_config": mcfg.to_dict(), "size": size, "batch_size": bsz, "world_size": dist.world_size,
        "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "amp": "bf16" if amp_dtype else "off", "num_workers": nw,
        "replica_digests": sums, "replicas_identical": len(set(sums)) == 1,
        "best": {"step": best["step"], "val": best["metrics"]},
        "last_val": val_rows[-1] if val_rows else None,
        "throughput_clips_per_s": _mean([r["clips_per_s"] for r in train_rows[-20:]]),
        "data_wait_share": _mean([r["data_s"] / r["step_s"] for r in train_rows[-20:] if r["step_s"]]),
        "files": {"best": "best.safetensors" if best["step"] is not None else None, "last": "last.safetensors",
                  "checkpoint": CKPT, "train_log": "train_log.csv", "val_log": "val_log.csv",
                  "val_curve": "val_curve.png", "config": "config.yaml"},
        "config": cfg,
    }
    if main:
        plot_val_curve(out / "val_curve.png", val_rows, train_rows, f"{mcfg.name} @ {size}px, seed {cfg['seed']}")
        write_json_atomic(out / "summary.json", summary)
        if tb is not None:
            tb.close()
        if finished:
            b = f"; best val IoU {best['iou']:.3f} at step {best['step']}" if best["step"] is not None else ""
            say(f"finished {step} steps in {wall / 60:.1f} min{b}; outputs in {out}")
        else:
            say(f"stopped at step {step}/{total} ({stopped or 'stop-after'}); continue with --resume")
    D.barrier(dist)
    return summary


class WeightAverage:
    """An exponential moving average of a model's parameters (buffers, e.g. BatchNorm statistics, copied).

    ``avg = decay * avg + (1 - decay) * w`` after every optimiser step, with the decay warmed up as
    ``min(decay, (1 + step) / (10 + step))`` so the average is not dominated by the starting weights (the
    global step, so that a resumed run continues exactly)."""

    def __init__(self, model: nn.Module, decay: float):
        import copy

        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        for a, w in zip(self.model.parameters(), model.parameters()):
            a.lerp_(w.detach(), 1.0 - d)
        for a, b in zip(self.model.buffers(), model.buffers()):
            a.copy_(b)


def weights_digest(model: nn.Module, buffers: bool = False) -> str:
    """SHA-256 of every parameter (and buffer) (to check that DDP replicas agree)."""
    import hashlib

    h = hashlib.sha256()
    items = model.state_dict().items() if buffers else model.named_parameters()
    for name, t in sorted(items):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _seed_all(seed: int, rank: int, step: int) -> None:
    s = int(np.random.SeedSequence([seed, rank, step, 7]).generate_state(1, dtype=np.uint32)[0])
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s)


def _mean(xs):
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return round(sum(xs) / len(xs), 4) if xs else None


def _jd(o):
    if isinstance(o, (np.generic,)):
        return o.item()
    raise TypeError(type(o).__name__)


def _weights_meta(cfg: dict, step: int, val: dict | None) -> dict:
    meta = {"trained_steps": step, "seed": cfg["seed"], "train_config": cfg}
    if val is not None:
        meta["val"] = {g: {k: r.get(k) for k in ("iou", "dice", "empty_frame_accuracy")} for g, r in val.items()}
    return meta


def _has_unused(rollout: nn.Module, cfg: dict, size: int, dev, amp_dtype) -> bool:
    """Run one dummy rollout (RNG untouched) and report whether any trainable parameter got no gradient
    (DDP then needs find_unused_parameters=True)."""
    buffers = {n: b.detach().clone() for n, b in rollout.named_buffers()}
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        t = int(cfg["clip"]["frames"])
        x = torch.rand(1, t, 1, size, size, device=dev)
        m = (torch.rand(1, 1, size, size, device=dev) > 0.5).float()
        with torch.autocast(dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            y = rollout(x, m)
        y.float().mean().backward()
    unused = [n for n, p in rollout.named_parameters() if p.requires_grad and p.grad is None]
    for p in rollout.parameters():
        p.grad = None
    with torch.no_grad():  # undo the dummy pass's BatchNorm statistics updates
        for n, b in rollout.named_buffers():
            b.copy_(buffers[n])
    return bool(unused)
