"""Overlay strips of a withdrawal and re-entry: what the tracker shows, frame by frame, beside the truth.

Picks the first sequence of a harness set that holds a withdrawal followed by a re-entry, tracks it from its
first mask with the given tracker settings (and, for comparison, the v1 mask policy), and writes one PNG:
a row of frames per policy from a few frames before the withdrawal to a few after the re-entry. Green: the
ground-truth outline; the tracker's own overlay (mask tint, shaft, tip) drawn by needletrack.track.overlay.

    python scripts/withdrawal_strip.py runs/harness/sets-<key>/clinical --out docs/tracker_withdrawal_strip.png
"""
from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np


def find_episode(masks):
    vis = [bool(m.any()) for m in masks]
    for a in range(1, len(vis)):
        if vis[a - 1] and not vis[a]:
            for b in range(a + 1, len(vis)):
                if vis[b]:
                    return a, b
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("set_dir", help="a folder of sequences (data set folder layout), e.g. a harness set")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--frames", type=int, default=8, help="frames per row")
    ap.add_argument("--width", type=int, default=220, help="px per frame in the strip")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from needletrack import Tracker
    from needletrack.data.folder import list_sequences, read_sequence
    from needletrack.track.overlay import draw_overlay, labelled_tile
    from needletrack.utils import write_png_atomic

    for p in list_sequences(args.set_dir):
        seq = read_sequence(p)
        masks = [seq.mask(i) for i in range(len(seq))]
        ep = find_episode(masks)
        if ep is not None:
            break
    else:
        print("no sequence with a withdrawal and a re-entry", file=sys.stderr)
        return 2
    a, b = ep
    idx = np.unique(np.linspace(max(1, a - 2), min(len(seq) - 1, b + 3), args.frames).round().astype(int))
    rows = []
    for policy in ("mask", "segment"):
        tr = Tracker.from_pretrained(args.model, policy=policy)
        res = {}
        for i in range(len(seq)):
            r = tr.step(seq.frame(i), mask=masks[0]) if i == 0 else tr.step(seq.frame(i))
            if i in idx:
                res[i] = r
        tiles = []
        for i in idx:
            rgb = draw_overlay(seq.frame(i), res[i], band=False)
            cs, _ = cv2.findContours(masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(rgb, cs, -1, (0, 255, 0), 1)
            label = f"{'v1 mask' if policy == 'mask' else 'v2 segment'}  f{i}  " + \
                    ("GT: needle" if masks[i].any() else "GT: withdrawn") + \
                    ("  shown" if res[i].visible else "  none")
            tiles.append(labelled_tile(rgb, label, args.width))
        rows.append(np.hstack(tiles))
    img = np.vstack(rows)
    write_png_atomic(args.out, np.ascontiguousarray(img[..., ::-1]))     # RGB -> BGR for OpenCV
    print(f"{seq.name}: withdrawal at frame {a}, re-entry at frame {b} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
