"""The simulated needle before and after a change, side by side (docs/sim_needle_before_after.png).

Renders 8 fixed cases (presets, angles, two over train-split real backgrounds) with whatever ``needletrack`` is
on the path, then puts two renders together: 128-px crops at 2x, then whole 448-px frames at contact-sheet scale.

    git worktree add /tmp/wt_before f7f389d
    PYTHONPATH=/tmp/wt_before/src python benchmarks/sim_needle_figure.py render /tmp/before.npz
    python benchmarks/sim_needle_figure.py render /tmp/after.npz
    python benchmarks/sim_needle_figure.py compose /tmp/before.npz /tmp/after.npz docs/sim_needle_before_after.png

The real backgrounds come from ../shared/data (set NEEDLETRACK_SHARED_DATA for a worktree elsewhere); the two
cases over real pictures are skipped, with a message, where the data is absent.
"""
from __future__ import annotations

import sys

import cv2
import numpy as np

# (preset, insertion angle in degrees, seed, over a real background)
CASES = [("easy", 8, 3, False), ("easy", 18, 4, False), ("clinical", 12, 12, False), ("hard", 25, 27, False),
         ("clinical", 10, 28, True), ("easy", 12, 22, True), ("bench", 15, 5, False), ("easy", 45, 10, False)]


def render(out: str) -> None:
    from needletrack.data.splits import background_split
    from needletrack.sim import preset, simulate_sequence

    bgs = background_split("train")
    crops, sheets, labels = [], [], []
    for name, ang, seed, real in CASES:
        if real and not bgs:
            print(f"skipped {name} over a real background: ../shared/data/us_backgrounds is absent")
            continue
        cfg = preset(name).replace(angle_deg=(ang, ang), first_visible_prob=1.0, out_of_plane_prob=0.0,
                                   withdraw_prob=0.0, overlay_prob=0.0)
        kw = {}
        if real:
            kw["backgrounds"] = bgs
            cfg = cfg.replace(real_background_prob=1.0)
        f, _m, nd = list(simulate_sequence(3, size=448, preset=cfg, seed=seed, needle="still", **kw))[-1]
        tip, tail = np.array(nd["tip"]), np.array(nd["tail"])
        c = tip - 0.3 * (tip - tail) if nd["visible"] else np.array([224, 224])
        h = 64
        cx, cy = int(np.clip(c[0], h, 448 - h)), int(np.clip(c[1], h, 448 - h))
        crops.append(f[cy - h:cy + h, cx - h:cx + h])
        sheets.append(f)
        labels.append(f"{name}{'+real' if real else ''} {ang} deg")
    np.savez(out, crops=np.array(crops), sheets=np.array(sheets), labels=np.array(labels))


def compose(before: str, after: str, out: str, tile_px: int = 168) -> None:
    b, a = np.load(before), np.load(after)
    if list(b["labels"]) != list(a["labels"]):
        raise SystemExit("sim_needle_figure: the two renders hold different cases")

    def tile(img, label=None):
        t = cv2.resize(img, (tile_px, tile_px),
                       interpolation=cv2.INTER_AREA if img.shape[0] > tile_px else cv2.INTER_NEAREST)
        if label:
            cv2.putText(t, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.36, 255, 1, cv2.LINE_AA)
        return t

    rows = []
    for name, key, src in [("before: crop 128 px, 2x", "crops", b), ("after: crop 128 px, 2x", "crops", a),
                           ("before: whole frame", "sheets", b), ("after: whole frame", "sheets", a)]:
        tiles = [tile(src[key][i], src["labels"][i] if key == "crops" and src is b else None)
                 for i in range(len(src["labels"]))]
        txt = np.zeros((22, tile_px), np.uint8)
        cv2.putText(txt, name, (3, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1, cv2.LINE_AA)
        rows.append(np.hstack([cv2.rotate(txt, cv2.ROTATE_90_COUNTERCLOCKWISE)] + tiles))
    img = np.vstack(rows)
    tmp = out + ".tmp.png"
    cv2.imwrite(tmp, img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    import os

    os.replace(tmp, out)
    print(f"{out}: {img.shape[1]}x{img.shape[0]} px")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 2 and argv[0] == "render":
        render(argv[1])
    elif len(argv) == 4 and argv[0] == "compose":
        compose(*argv[1:])
    else:
        print(__doc__.strip().splitlines()[0] + "\nusage: sim_needle_figure.py render OUT.npz | compose BEFORE.npz "
              "AFTER.npz OUT.png", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
