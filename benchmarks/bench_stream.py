"""Streaming cost stays flat: ms/frame and peak RSS from frame 500 to frame 10,000 of a long simulated stream.

    python benchmarks/bench_stream.py                         # the full run: 10,000 frames
    python benchmarks/bench_stream.py --frames 1200 --checkpoints 200,600,1200   # a short run
    python benchmarks/bench_stream.py --model stnan_fast --size 256 --json bench_stream.json

The stream is a simulated insertion (needletrack.sim, preset "clinical") of ``--clip`` frames played
forwards and backwards for as long as needed (the tracker's cost does not depend on the pixels, and
simulating 10,000 frames would time the simulator, not the tracker). Every ``--mem-every`` frames the
tracker writes a memory frame (``--always-write`` forces writes even from an untrained model, so the
memory store really fills its ``--memory-slots`` and its ring wraps many times).

At each checkpoint it reports the mean and median ms/frame over the last ``--window`` frames, the process's
peak RSS (``ru_maxrss``) and current RSS, and the memory store's size. Pass: the last checkpoint is within
``--tolerance`` (10 %) of the first for both ms/frame (median) and peak RSS.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from needletrack.eval.benchmark import peak_rss_mb, rss_mb


def make_clip(n: int, size: int, seed: int):
    """(frames, first_mask): the simulator's clinical preset if available, else a synthetic moving line."""
    try:
        from needletrack.sim import simulate_sequence
    except ImportError:
        simulate_sequence = None
    frames, masks = [], []
    if simulate_sequence is not None:
        for f, m, _ in simulate_sequence(n, size, "clinical", seed):
            frames.append(f)
            masks.append(m)
        k = next((i for i, m in enumerate(masks) if np.asarray(m).any()), None)
        if k is not None:
            return frames[k:], np.asarray(masks[k], dtype=bool)
    from needletrack.geometry import line_mask

    rng = np.random.default_rng(seed)
    bg = (50 + 30 * rng.random((size, size))).astype(np.float32)
    frames = []
    for t in range(n):
        p1 = (0.2 * size + 0.3 * size * t / n, 0.2 * size + 0.25 * size * t / n)
        m = line_mask((size, size), (2, 4), p1, max(2, size // 100))
        f = bg + 6 * rng.standard_normal(bg.shape)
        f[m] = 220
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
        if t == 0:
            first = m
    return frames, first


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="model name or checkpoint; 'default' falls back to an "
                                                       "untrained stnan_fast if its weights are missing")
    ap.add_argument("--random", action="store_true", help="an untrained preset (--model names a preset)")
    ap.add_argument("--size", type=int, help="frame size (default: the model's input size)")
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--checkpoints", default="500,1000,2000,5000,10000")
    ap.add_argument("--window", type=int, default=200, help="frames averaged at each checkpoint")
    ap.add_argument("--clip", type=int, default=120, help="simulated frames, played back and forth")
    ap.add_argument("--mem-every", type=int, default=5)
    ap.add_argument("--memory-slots", type=int, default=None,
                    help="memory size: the first frame + the recent ring (default 9)")
    ap.add_argument("--mem-cap", type=int, default=None, help=argparse.SUPPRESS)  # old: the ring alone (slots - 1)
    ap.add_argument("--always-write", action="store_true",
                    help="write memory frames whatever the confidence (use with untrained models)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="which time judges flatness: wall (default; needs a quiet machine) or the process's CPU "
                         "time (robust when other jobs share the cores)")
    ap.add_argument("--device", default="cpu", help="torch device")
    ap.add_argument("--engine", default="torch", choices=("torch", "onnx"), help="inference engine")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.memory_slots is None:
        args.memory_slots = 9 if args.mem_cap is None else args.mem_cap + 1

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from needletrack.commands.demo import load_demo_model
    from needletrack.track import Tracker

    if args.random:
        from needletrack.models import build_model

        model, label = build_model(args.model), f"{args.model} (untrained)"
    else:
        model, label = load_demo_model(args.model, lambda m: print(m, file=sys.stderr))
    from needletrack.track import make_engine

    engine = make_engine(model.to(args.device), device=args.device, engine=args.engine)
    tracker = Tracker(engine, mem_every=args.mem_every, memory_slots=args.memory_slots,
                      **({"mem_min_score": 0.0, "threshold": 0.0} if args.always_write else {}))
    size = args.size or tracker.input_hw[0]
    clip, first = make_clip(args.clip, size, args.seed)
    order = list(range(len(clip))) + list(range(len(clip) - 2, 0, -1))   # ping-pong, no jumps
    checkpoints = sorted({int(c) for c in args.checkpoints.split(",") if int(c) <= args.frames} | {args.frames})
    times = np.zeros(args.frames, dtype=np.float64)
    cpu = np.zeros(args.frames, dtype=np.float64)
    rows = []
    t_all = time.perf_counter()
    for i in range(args.frames):
        f = clip[order[i % len(order)]]
        t0, c0 = time.perf_counter(), time.process_time()
        if i == 0:
            tracker.step(f, mask=first)
        else:
            tracker.step(f)
        times[i] = time.perf_counter() - t0
        cpu[i] = time.process_time() - c0
        if i + 1 in checkpoints:
            w = times[max(1, i + 1 - args.window): i + 1] * 1000.0
            wc = cpu[max(1, i + 1 - args.window): i + 1] * 1000.0
            row = {"frame": i + 1, "ms_mean": float(w.mean()), "ms_median": float(np.median(w)),
                   "ms_p95": float(np.percentile(w, 95)), "cpu_ms_median": float(np.median(wc)),
                   "peak_rss_mb": peak_rss_mb(), "rss_mb": rss_mb(),
                   "memory_frames": tracker.memory.n_filled, "memory_kb": tracker.memory.nbytes() / 1024}
            rows.append(row)
            print(f"frame {row['frame']:>6}: {row['ms_mean']:7.2f} ms/frame mean, {row['ms_median']:7.2f} median, "
                  f"{row['ms_p95']:7.2f} p95, CPU {row['cpu_ms_median']:7.2f} median | peak RSS {row['peak_rss_mb']:7.1f} MB, RSS {row['rss_mb']:7.1f} MB"
                  f" | memory {row['memory_frames']} frames {row['memory_kb']:.0f} kB", flush=True)
    first_row, last_row = rows[0], rows[-1]
    key = "ms_median" if args.clock == "wall" else "cpu_ms_median"
    ms_ratio = last_row[key] / first_row[key]
    rss_ratio = last_row["peak_rss_mb"] / first_row["peak_rss_mb"]
    ok = abs(ms_ratio - 1) <= args.tolerance and abs(rss_ratio - 1) <= args.tolerance
    result = {"model": label, "size": size, "frames": args.frames, "threads": torch.get_num_threads(),
              "window": args.window, "mem_every": args.mem_every, "memory_slots": args.memory_slots,
              "checkpoints": rows, "ms_ratio_last_first": ms_ratio, "peak_rss_ratio_last_first": rss_ratio,
              "tolerance": args.tolerance, "clock": args.clock, "device": args.device,
              "engine": engine.name, "flat": bool(ok), "wall_s": time.perf_counter() - t_all}
    print(f"{label} @ {size}px, {torch.get_num_threads()} threads, {args.device}: "
          f"{'wall' if args.clock == 'wall' else 'CPU'} ms/frame ×{ms_ratio:.3f}, "
          f"peak RSS ×{rss_ratio:.3f} from frame {first_row['frame']} to {last_row['frame']} -> "
          f"{'FLAT' if ok else 'NOT FLAT'} (tolerance {args.tolerance:.0%})")
    if args.json:
        from needletrack.utils import write_json_atomic

        write_json_atomic(args.json, result)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
