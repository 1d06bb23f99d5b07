"""Contact sheet of simulated frames: one row per preset, plus a row on real backgrounds.

    python -m needletrack.sim.sheet docs/sim_contact_sheet.png [--backgrounds DIR] [--overlay]
        [--cols 5] [--size 448] [--tile 224] [--seed 0] [--scenes breast,muscle,nerve]

Each tile is a frame from its own sequence (seed = --seed + column), taken a few frames in so the
needle has moved; ``--overlay`` draws the ground-truth outline (green) and tip (red). ``--scenes`` makes one row
per named scene instead (the clinical preset with its ``scene`` set: breast, muscle, nerve, bench).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def _tile(frame, mask, needle, tile, overlay, label):
    import cv2

    img = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if overlay and mask.any():
        cnt, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, cnt, -1, (0, 255, 0), max(1, frame.shape[0] // 300))
        tx, ty = needle["tip"]
        cv2.circle(img, (int(round(tx)), int(round(ty))), max(2, frame.shape[0] // 120), (0, 0, 255), -1)
    img = cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA)
    cv2.putText(img, label, (4, tile - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 200, 255), 1, cv2.LINE_AA)
    return img


def make_sheet(cols=5, size=448, tile=224, seed=0, backgrounds=None, overlay=False, frame_index=4, scenes=None):
    from needletrack.sim import load_backgrounds, simulate_sequence
    from needletrack.sim.config import preset

    if scenes:
        rows = [(sc, None, preset("clinical").replace(scene=sc)) for sc in scenes]
    else:
        rows = [(n, None, n) for n in ("easy", "clinical", "hard")]
    bgs = load_backgrounds(backgrounds) if backgrounds else []
    if bgs:
        rows.append(("clinical", bgs, "clinical"))
    out = []
    for name, bg, cfg in rows:
        tiles = []
        for c in range(cols):
            it = simulate_sequence(frame_index + 1, size=size, preset=cfg, seed=seed + c, backgrounds=bg)
            frames = list(it)
            # prefer a frame that shows the needle
            pick = next((f for f in reversed(frames) if f[2]["visible"]), frames[-1])
            f, m, n = pick
            kind = "real" if bg else it.meta["probe"]
            label = f"{name} {kind} {it.meta['insertion_angle_deg']:.0f}deg {it.meta['gauge']}G"
            tiles.append(_tile(f, m, n, tile, overlay, label))
        out.append(np.hstack(tiles))
    return np.vstack(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description="contact sheet of simulated frames")
    ap.add_argument("out")
    ap.add_argument("--backgrounds", default=None)
    ap.add_argument("--overlay", action="store_true")
    ap.add_argument("--cols", type=int, default=5)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--tile", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenes", default=None, help="one row per scene (comma-separated: breast,muscle,nerve,bench)")
    a = ap.parse_args(argv)
    from needletrack.utils import write_png_atomic

    sheet = make_sheet(a.cols, a.size, a.tile, a.seed, a.backgrounds, a.overlay,
                       scenes=a.scenes.split(",") if a.scenes else None)
    write_png_atomic(a.out, sheet)
    print(f"wrote {a.out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
