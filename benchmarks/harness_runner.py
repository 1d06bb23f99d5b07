"""Run one tracker configuration over the harness's frozen sets and save what it reported, per frame.

Called by ``benchmarks/eval_tracking.py`` in a subprocess, possibly with ``PYTHONPATH`` pointing at an old
commit's ``src/`` (a git worktree). It therefore uses only the stable public API of DESIGN §3
(``Tracker.from_pretrained(model, engine=...)`` and ``tracker.step(frame, mask=... | auto=True)``), numpy and
OpenCV, and nothing else of the package. Output per sequence: ``OUT/<set>/<seq>.npz`` with the packed masks,
visible flags, scores, tips and the time of each ``step`` call.

    python benchmarks/harness_runner.py SETS_DIR OUT_DIR --sets clinical hard --mode prompt --model PATH
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np


def read_seq(folder: Path):
    names = sorted(p.name for p in (folder / "frames").iterdir() if p.suffix == ".png")
    frames = [cv2.imread(str(folder / "frames" / n), cv2.IMREAD_GRAYSCALE) for n in names]
    masks = [cv2.imread(str(folder / "masks" / n), cv2.IMREAD_GRAYSCALE) >= 128 for n in names]
    return frames, masks


def pack_run(masks, visible, score, tip, ms) -> dict:
    """One sequence's run in the saved format (masks bit-packed); ``eval_tracking.load_run`` reads it back."""
    masks = np.asarray(masks, bool)
    n, h, w = masks.shape
    return {"masks": np.packbits(masks.reshape(n, -1), axis=1), "shape": np.array([n, h, w]),
            "visible": np.asarray(visible, bool), "score": np.asarray(score, np.float32),
            "tip": np.asarray(tip, np.float32), "ms": np.asarray(ms, np.float64)}


def save_run(path: Path, run: dict) -> None:
    """Write a packed run atomically (temporary name, then rename)."""
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, **run)
    os.replace(tmp, path)


def run_sequence(tracker, frames, first_mask, mode: str) -> dict:
    n = len(frames)
    h, w = frames[0].shape
    masks = np.zeros((n, h, w), bool)
    visible = np.zeros(n, bool)
    score = np.zeros(n, np.float32)
    tip = np.full((n, 2), np.nan, np.float32)
    ms = np.zeros(n, np.float64)
    for i, f in enumerate(frames):
        t0 = time.perf_counter()
        if i == 0:
            r = tracker.step(f, mask=first_mask) if mode == "prompt" else tracker.step(f, auto=True)
        else:
            r = tracker.step(f)
        ms[i] = 1000.0 * (time.perf_counter() - t0)
        masks[i] = np.asarray(r.mask, bool)
        visible[i] = bool(r.visible)
        score[i] = float(r.score)
        if r.tip is not None:
            tip[i] = r.tip
    return pack_run(masks, visible, score, tip, ms)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--sets", nargs="+", required=True)
    ap.add_argument("--mode", choices=["prompt", "auto"], default="prompt")
    ap.add_argument("--model", default="default")
    ap.add_argument("--engine", default="auto")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from needletrack import Tracker

    info = {"python_path": os.environ.get("PYTHONPATH", ""), "model": args.model, "engine": args.engine,
            "mode": args.mode, "needletrack_file": sys.modules["needletrack"].__file__}
    tracker = None
    for set_name in args.sets:
        sdir = Path(args.sets_dir) / set_name
        out = Path(args.out_dir) / set_name
        out.mkdir(parents=True, exist_ok=True)
        for seq in sorted(p for p in sdir.iterdir() if (p / "frames").is_dir()):
            frames, gt = read_seq(seq)
            if args.mode == "prompt" and not gt[0].any():
                continue
            if tracker is None:
                tracker = Tracker.from_pretrained(args.model, engine=args.engine)
                info["engine_class"] = type(tracker.engine).__name__
            else:
                tracker.reset()
            save_run(out / f"{seq.name}.npz", run_sequence(tracker, frames, gt[0], args.mode))
    (Path(args.out_dir) / f"runner_{args.mode}.json").write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
