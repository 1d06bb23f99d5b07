"""Contact sheet: real test-split frames beside simulated ones (issue 17).

    python benchmarks/sim_contact_sheet.py --out docs/sim_v2_contact_sheet.png

Row 1: real frames of the test split (BUSI, usgra-seg, DL_Track, the liver sweep's test block). Rows 2-5: frame 6
of the first sequences of test/easy, test/clinical, test/hard and test/clinical+real (over train-split real
backgrounds), with the needle. Every tile is 256 px (the realism classifier's scale), labelled at the left.
"""
from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np


def _tile(img, size=256):
    from needletrack.eval.realism import to_scale

    im = to_scale(img, size)[0]
    t = np.zeros((size, size), np.uint8)
    t[:im.shape[0], :im.shape[1]] = im
    return t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/sim_v2_contact_sheet.png")
    ap.add_argument("--cols", type=int, default=6)
    args = ap.parse_args(argv)
    from needletrack.data import splits

    n = args.cols
    real = splits.background_split("test")
    rows, labels = [], []
    if real:
        by_src = {}
        for img, _m, meta in real:
            by_src.setdefault(splits.background_group(meta), []).append(img)
        pick = []
        for k in range(n):
            srcs = sorted(by_src)
            s = srcs[k % len(srcs)]
            pick.append(by_src[s][(k // len(srcs)) * 7 % len(by_src[s])])
        liver = splits.liver_frames("test")
        if liver:
            pick[-1] = liver[0][len(liver[0]) // 2]
        rows.append([_tile(p) for p in pick])
        labels.append("real (test)")
    for kind in ("easy", "clinical", "hard", "clinical+real"):
        bgs = splits.background_split("train") if kind == "clinical+real" else None
        if kind == "clinical+real" and not bgs:
            continue
        rows.append([_tile(seq.frames[6]) for seq in splits.iter_set(f"test/{kind}", n, 7, size=448, backgrounds=bgs)])
        labels.append(kind)
    out = []
    for lab, r in zip(labels, rows):
        band = np.zeros((256, 28), np.uint8)
        txt = np.zeros((28, 256), np.uint8)
        cv2.putText(txt, lab, (4, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1, cv2.LINE_AA)
        band[:, :] = cv2.rotate(txt, cv2.ROTATE_90_COUNTERCLOCKWISE)
        out.append(np.hstack([band] + r))
    sheet = np.vstack(out)
    cv2.imwrite(args.out, sheet)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
