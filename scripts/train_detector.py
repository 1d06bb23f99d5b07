#!/usr/bin/env python
"""Train the learned single-frame needle detector (needletrack.models.detector) from the harness's train splits.

    python scripts/train_detector.py configs/detector/train.yaml [--out weights/detector.safetensors]

1. Frames: simulated sequences (train seeds only, 2**31 upwards; presets, real train backgrounds, liver-sweep
   train windows, needle-free clips as the config says) and real needle-free frames (the liver sweep's train
   block, the train backgrounds as stills), each letterboxed to the detector's input as the tracker does. The
   frames are cached under ``runs/detector_data/<hash of the data config>.npz`` (git-ignored).
2. Training: Adam, cosine schedule, a fixed seed; BCE + soft Dice on the needle mask at half resolution.
3. Output: a .safetensors file with the config, the command, the seed, the steps and the loss curve in its
   metadata, written atomically.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _sizes(rng, sizes):
    s = sizes[int(rng.integers(len(sizes)))]
    return (int(s), int(s)) if isinstance(s, (int, float)) else (int(s[0]), int(s[1]))


def build_frames(data: dict, input_size: int, seed: int, log=print):
    """(frames uint8 N×S×S, targets uint8 N×S/2×S/2, previous-frame index N (-1: a clip's first frame)) for the
    config's ``data`` section."""
    from needletrack.data.clip_sources import RealNegativeClips, SimClips
    from needletrack.track.letterbox import Letterbox

    rng = np.random.default_rng(seed)
    frames, targets, kinds, prev = [], [], [], []
    half = input_size // 2

    def add(frame_u8, mask, kind, first):
        prev.append(-1 if first else len(frames) - 1)      # the previous frame of the same clip (-1: none)
        lb = Letterbox(frame_u8.shape[:2], (input_size, input_size))
        x = lb.forward(frame_u8.astype(np.float32) / 255.0)
        m = lb.forward(mask.astype(np.float32)) >= 0.5
        # half resolution: a target pixel is needle where any of its 2×2 input pixels is (thin shafts stay)
        t = m.reshape(half, 2, half, 2).any(axis=(1, 3))
        frames.append(np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8))
        targets.append(t.astype(np.uint8))
        kinds.append(kind)

    sim = data.get("sim") or {}
    n_seq = int(sim.get("sequences", 0))
    if n_seq:
        src = SimClips(presets=sim.get("presets"), backgrounds=sim.get("backgrounds"),
                       background_prob=float(sim.get("background_prob", 0.5)), gap=tuple(sim.get("gap", (2, 4))),
                       episode_prob=float(sim.get("episode_prob", 0.5)), absent_prob=float(sim.get("absent_prob", 0.1)),
                       moving_prob=float(sim.get("moving_prob", 0.0)))
        t0 = time.time()
        for k in range(n_seq):
            size = _sizes(rng, sim.get("sizes", [448]))
            clip = src.sample(rng, size, int(sim.get("frames", 12)))
            for j, (f, m) in enumerate(zip(clip.frames, clip.masks)):
                add(f, m, "sim", j == 0)
            if (k + 1) % 50 == 0:
                log(f"  sim sequences {k + 1}/{n_seq} ({time.time() - t0:.0f} s)")
    neg = data.get("negatives") or {}
    n_neg = int(neg.get("clips", 0))
    if n_neg:
        try:
            src = RealNegativeClips(liver_prob=float(neg.get("liver_prob", 0.5)), gap=tuple(neg.get("gap", (1, 3))))
        except Exception as e:  # noqa: BLE001 (../shared/data absent: train without real negatives)
            log(f"  real negatives skipped: {e}")
            n_neg = 0
        for _ in range(n_neg):
            size = _sizes(rng, neg.get("sizes", [448]))
            clip = src.sample(rng, size, int(neg.get("frames", 4)))
            for j, (f, m) in enumerate(zip(clip.frames, clip.masks)):
                add(f, m, "negative", j == 0)
    if not frames:
        raise SystemExit("the config's data section makes no frames")
    return np.stack(frames), np.stack(targets), np.asarray(prev, np.int64)


def _augment(x: np.ndarray, xp: np.ndarray, t: np.ndarray, rng):
    """A batch (frames and previous frames B×S×S float in [0, 1], targets B×S/2×S/2): left-right flips, gain and
    gamma (the same for a frame and its previous one), a little noise."""
    flip = rng.random(len(x)) < 0.5
    gain = rng.uniform(0.75, 1.3, (len(x), 1, 1))
    gamma = np.exp(rng.uniform(-0.35, 0.35, (len(x), 1, 1)))
    noisy = rng.random((len(x), 1, 1)) < 0.3
    out = []
    for a in (x, xp):
        a = np.where(flip[:, None, None], a[:, :, ::-1], a)
        a = np.clip(a * gain, 0.0, 1.0) ** gamma
        a = a + rng.normal(0.0, 0.01, a.shape) * noisy
        out.append(np.clip(a, 0.0, 1.0).astype(np.float32))
    t = np.where(flip[:, None, None], t[:, :, ::-1], t)
    return out[0], out[1], np.ascontiguousarray(t, dtype=np.float32)


def _init_from(model, path, log=print) -> None:
    """Start from another detector file; a one-channel stem grows a zero-initialised motion channel."""
    from needletrack.track.detector import load_detector

    src = load_detector(path).state_dict()
    own = model.state_dict()
    for k, v in src.items():
        if k in own and own[k].shape != v.shape and v.dim() == 4 and own[k].shape[1] > v.shape[1]:
            w = own[k].clone().zero_()
            w[:, :v.shape[1]] = v
            src[k] = w
    model.load_state_dict(src)
    log(f"initialised from {path}")


def train(cfg: dict, out: Path, cache_dir: Path, log=print) -> dict:
    import torch

    from needletrack.models.detector import DetectorConfig, NeedleDetectorNet, detector_input
    from needletrack.track.detector import save_detector
    from needletrack.train.losses import bce_loss, dice_loss

    seed = int(cfg.get("seed", 0))
    size = int(cfg.get("input_size", 256))
    key = hashlib.sha256(json.dumps({"data": cfg["data"], "size": size, "seed": seed}, sort_keys=True)
                         .encode()).hexdigest()[:12]
    cache = cache_dir / f"{key}.npz"
    t0 = time.time()
    if cache.exists():
        z = np.load(cache)
        frames, targets, prev = z["frames"], z["targets"], z["prev"]
        log(f"frames from {cache} ({len(frames)})")
    else:
        log("making frames ...")
        frames, targets, prev = build_frames(cfg["data"], size, seed, log)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.stem + ".tmp.npz")
        np.savez(tmp, frames=frames, targets=targets, prev=prev)
        os.replace(tmp, cache)
        log(f"{len(frames)} frames ({targets.reshape(len(targets), -1).any(1).mean():.2f} with a needle) "
            f"in {time.time() - t0:.0f} s -> {cache}")
    data_s = time.time() - t0

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 1)
    in_ch = int(cfg.get("in_channels", 1))
    model = NeedleDetectorNet(DetectorConfig(input_size=size, widths=tuple(cfg.get("widths", (16, 24, 32, 48, 64))),
                                             in_channels=in_ch))
    if cfg.get("init"):
        _init_from(model, ROOT / cfg["init"] if not Path(cfg["init"]).is_absolute() else cfg["init"], log)
    still_p = float(cfg.get("still_prob", 0.2))    # share of samples shown with no previous frame (diff 0)
    steps, bs = int(cfg.get("steps", 2000)), int(cfg.get("batch_size", 16))
    lr, warm = float(cfg.get("lr", 2e-3)), int(cfg.get("warmup", 100))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=float(cfg.get("weight_decay", 1e-4)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * (
        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps))))))
    pos_weight = float(cfg.get("pos_weight", 4.0))
    curve, run = [], []
    every = int(cfg.get("log_every", 100))
    t1 = time.time()
    model.train()
    for step in range(steps):
        idx = rng.integers(0, len(frames), bs)
        pidx = np.where((prev[idx] >= 0) & (rng.random(bs) >= still_p), prev[idx], idx)
        xb, pb, tb = _augment(frames[idx].astype(np.float32) / 255.0, frames[pidx].astype(np.float32) / 255.0,
                              targets[idx], rng)
        x = detector_input(torch.from_numpy(xb)[:, None], torch.from_numpy(pb)[:, None], in_ch)
        t = torch.from_numpy(tb)[:, None]
        logits = model(x)
        bce = bce_loss(logits, t, pos_weight)
        has = t.flatten(1).amax(1) > 0          # soft Dice over the frames that show a needle
        loss = bce + (dice_loss(logits[has], t[has]) if bool(has.any()) else 0.0 * bce)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        run.append(float(loss.detach()))
        if (step + 1) % every == 0 or step + 1 == steps:
            curve.append([step + 1, round(float(np.mean(run)), 4)])
            log(f"step {step + 1}/{steps} loss {np.mean(run):.4f} ({time.time() - t1:.0f} s)")
            run = []
    model.eval()
    meta = {"seed": seed, "steps": steps, "batch_size": bs, "frames": int(len(frames)), "data_cache": cache.name,
            "config": cfg, "command": " ".join(["python", "scripts/train_detector.py"] + sys.argv[1:]),
            "train_s": round(time.time() - t1, 1), "data_s": round(data_s, 1), "loss_curve": curve,
            "torch": torch.__version__}
    save_detector(model, out, meta)
    log(f"wrote {out}")
    return meta


def main(argv=None) -> int:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--out", default=None, help="weights file (default: the config's out)")
    ap.add_argument("--cache-dir", default=str(ROOT / "runs" / "detector_data"))
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    try:
        cfg = yaml.safe_load(Path(a.config).read_text())
    except (OSError, yaml.YAMLError) as e:
        print(f"error: cannot read {a.config}: {e}", file=sys.stderr)
        return 2
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out or cfg.get("out", "weights/detector.safetensors"))
    train(cfg, out, Path(a.cache_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
