"""Simulator speed and needle contrast per preset.

    python benchmarks/bench_sim.py [--size 448] [--frames 100] [--sequences 5] [--clip 5] [--json OUT]

Speed: frames/s of whole sequences (setup included) and of 5-frame training clips (setup dominates),
on one OpenCV thread per process (as in a DataLoader worker). Wall time and process CPU time are both
reported: on a shared machine wall time includes waiting for the CPU.
Contrast: needle CNR (``needletrack.sim.needle_cnr``) over the visible frames, median and quartiles.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np


def _measure(preset, size, frames, sequences, seed0):
    from needletrack.sim import needle_cnr, simulate_sequence

    wall = cpu = 0.0
    setup_wall = 0.0
    cnrs = []
    n = 0
    for i in range(sequences):
        t0, c0 = time.perf_counter(), time.process_time()
        it = simulate_sequence(frames, size=size, preset=preset, seed=seed0 + i)
        setup_wall += time.perf_counter() - t0
        out = list(it)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        n += len(out)
        for f, m, nd in out[:: max(1, len(out) // 10)]:
            c = needle_cnr(f, m, nd)
            if c is not None:
                cnrs.append(c)
    return n, wall, cpu, setup_wall, cnrs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--frames", type=int, default=100, help="frames per long sequence")
    ap.add_argument("--sequences", type=int, default=5)
    ap.add_argument("--clip", type=int, default=5, help="frames per training clip")
    ap.add_argument("--presets", default="easy,clinical,hard")
    ap.add_argument("--threads", type=int, default=1, help="OpenCV threads (default 1, as in a DataLoader worker)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import cv2

    cv2.setNumThreads(args.threads)
    from needletrack.sim import simulate_sequence

    list(simulate_sequence(2, size=args.size, seed=999))  # warm-up (imports, caches)
    res = {"size": args.size, "frames": args.frames, "sequences": args.sequences, "clip": args.clip,
           "opencv_threads": args.threads, "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
           "python": sys.version.split()[0], "machine": platform.machine(), "presets": {}}
    print(f"size {args.size}x{args.size}, OpenCV threads {args.threads}, load average {res['load_avg_1m']:.1f} "
          f"on {os.cpu_count()} CPUs")
    print(f"{'preset':9s} {'seq fps':>8s} {'(cpu)':>7s} {'clip fps':>9s} {'(cpu)':>7s} {'setup ms':>9s} "
          f"{'CNR median [IQR]':>22s} {'n':>4s}")
    for p in args.presets.split(","):
        n, wall, cpu, setup, cnrs = _measure(p, args.size, args.frames, args.sequences, 0)
        cn, cwall, ccpu, csetup, ccnrs = _measure(p, args.size, args.clip, args.sequences * 4, 1000)
        allc = np.array(cnrs + ccnrs)
        q1, med, q3 = (float(np.percentile(allc, q)) for q in (25, 50, 75)) if allc.size else (float("nan"),) * 3
        r = {"seq_fps_wall": n / wall, "seq_fps_cpu": n / cpu, "clip_fps_wall": cn / cwall, "clip_fps_cpu": cn / ccpu,
             "setup_ms": 1000 * (setup + csetup) / (args.sequences * 5),
             "cnr_median": med, "cnr_q1": q1, "cnr_q3": q3, "cnr_n": int(allc.size)}
        res["presets"][p] = r
        print(f"{p:9s} {r['seq_fps_wall']:8.1f} {r['seq_fps_cpu']:7.1f} {r['clip_fps_wall']:9.1f} "
              f"{r['clip_fps_cpu']:7.1f} {r['setup_ms']:9.1f} {med:8.2f} [{q1:5.2f}, {q3:5.2f}] {allc.size:4d}")
    if args.json:
        from needletrack.utils import write_json_atomic

        write_json_atomic(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
