"""Crops of the simulated needle drawn over train-split real backgrounds (8 deg, clinical preset, seeds 1-6), 100 x 160
px of the 448-px frame around the labelled shaft, shown at 2x. For a before/after figure, run it in a git worktree
of the earlier commit and here, then stack the two:

    python benchmarks/sim_realbg_needle.py --out /tmp/after.png
    repo=$PWD; git worktree add /tmp/before 320e541~1 && (cd /tmp/before && \\
        NEEDLETRACK_SHARED_DATA=$repo/../shared/data PYTHONPATH=src python $repo/benchmarks/sim_realbg_needle.py --out /tmp/before.png)
    python benchmarks/sim_realbg_needle.py --stack /tmp/before.png /tmp/after.png --out docs/sim_realbg_needle.png

Needs the shared real data (../shared/data/us_backgrounds); prints a line and exits 0 without it.
"""
from __future__ import annotations

import argparse
import os
import sys

import cv2
import numpy as np


def crops(seeds=range(1, 7)) -> np.ndarray | None:
    from sim_stats import _sim      # the needle rows' still, fixed-angle sequence (this script's folder)

    from needletrack.data import splits

    bgs = splits.background_split("train")
    if not bgs:
        return None
    tiles = []
    for seed in seeds:
        it, frames = _sim("clinical", 8.0, seed, backgrounds=bgs)
        f, m, _nd = frames[-1]
        ys, xs = np.nonzero(m)
        cy, cx = int(ys.mean()), int(xs.mean())
        crop = np.zeros((100, 160), np.uint8)
        c = f[max(cy - 50, 0):cy + 50, max(cx - 80, 0):cx + 80]
        crop[:c.shape[0], :c.shape[1]] = c
        tiles.append(cv2.resize(crop, (320, 200), interpolation=cv2.INTER_NEAREST))
    return np.vstack([np.hstack(tiles[:3]), np.hstack(tiles[3:])])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--stack", nargs=2, metavar=("BEFORE", "AFTER"), help="stack two crop sheets with labels")
    args = ap.parse_args(argv)
    if args.stack:
        parts = []
        for path, label in zip(args.stack, ("before", "after")):
            img = cv2.imread(path, cv2.IMREAD_GRAYSCALE) if os.path.isfile(path) else None
            if img is None:
                print(f"sim_realbg_needle: cannot read {path}", file=sys.stderr)
                return 2
            bar = np.zeros((28, img.shape[1]), np.uint8)
            cv2.putText(bar, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.7, 255, 1, cv2.LINE_AA)
            parts += [bar, img]
        out = np.vstack(parts)
    else:
        out = crops()
        if out is None:
            print("sim_realbg_needle: the shared real backgrounds are absent; nothing to draw")
            return 0
    from needletrack.utils import write_png_atomic

    write_png_atomic(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
