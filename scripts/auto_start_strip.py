"""Overlay strips of the auto start: the first frames of a few needle sequences, tracked with ``auto=True`` by
the learned start rule (the shipped detector) and by the training-free rules alone (``detector=None``).

Takes the first ``--sequences`` sequences of a harness set as they come (no choosing by result), and writes
one PNG: per sequence, a row per rule, frames 0 to ``--last``. Green: the ground-truth outline; the tracker's
own overlay (mask tint, shaft, tip) drawn by needletrack.track.overlay; the label says what the tracker reported.

    python scripts/auto_start_strip.py runs/harness/sets-<key>/clinical --out docs/detector_start_strip.png --width 150
"""
from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("set_dir", help="a folder of sequences (data set folder layout), e.g. a harness set")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--sequences", type=int, default=3)
    ap.add_argument("--last", type=int, default=10, help="last frame shown")
    ap.add_argument("--frames", type=int, default=6, help="frames per row")
    ap.add_argument("--width", type=int, default=200, help="px per frame in the strip")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from needletrack import Tracker
    from needletrack.data.folder import list_sequences, read_sequence
    from needletrack.eval.metrics import frame_iou
    from needletrack.track.overlay import draw_overlay, labelled_tile
    from needletrack.utils import write_png_atomic

    paths = list_sequences(args.set_dir)[:args.sequences]
    if not paths:
        print(f"error: no sequences in {args.set_dir}", file=sys.stderr)
        return 2
    idx = np.unique(np.linspace(0, args.last, args.frames).round().astype(int))
    rows = []
    for p in paths:
        seq = read_sequence(p)
        n = min(len(seq), args.last + 1)
        masks = [seq.mask(i) for i in range(n)]
        for rule, kw in (("learned", {}), ("training-free", {"detector": None})):
            tr = Tracker.from_pretrained(args.model, **kw)
            res = [tr.step(seq.frame(i), auto=(i == 0)) for i in range(n)]
            tiles = []
            for i in idx[idx < n]:
                r = res[i]
                rgb = draw_overlay(seq.frame(i), r, band=False)
                cs, _ = cv2.findContours(masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                cv2.drawContours(rgb, cs, -1, (0, 255, 0), 1)
                state = "searching" if r.source == "search" else (
                    f"IoU {frame_iou(r.mask, masks[i]):.2f}" if r.visible and masks[i].any() else
                    "shown, no needle" if r.visible else "none")
                label = f"{seq.name[-8:]} {rule} f{i} {state}"
                tiles.append(labelled_tile(rgb, label, args.width))
            rows.append(np.hstack(tiles))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    write_png_atomic(args.out, np.ascontiguousarray(np.vstack(rows)[..., ::-1]))     # RGB -> BGR for OpenCV
    print(f"{len(paths)} sequences of {args.set_dir} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
