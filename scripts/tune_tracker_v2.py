"""How tracker v2's settings were chosen: on the harness's validation sets only, never a test set.

Two tables:

1. **Auto start** (``AutoInitConfig.confirm_frames`` / ``start_min_cnr``): for each rule, the share of
   validation needle clips (``val/clinical-ep``, ``val/hard-ep``, 10 × 20 frames each) started on the needle
   (line IoU >= 0.3) within 10 frames, and the share of needle-free frames that would be reported after a
   start (``val/negatives`` 5 × 20, the BUSI val images as 3-frame stills, the liver sweep's val block).
2. **Segment policy** (``segment_min_score``, ``low_frac``, ``mask_rule``) against the v1 mask policy, with the
   shipped weights, on ``val/clinical-ep`` and ``val/hard-ep`` (8 × 40) and ``val/still`` (2 × 151).

    python scripts/tune_tracker_v2.py --sim-commit b03872a --out docs/results/tune_tracker_v2.md

``--sim-commit`` makes the validation frames with that commit's simulator (a temporary git worktree, in a
subprocess); the tracker is always this tree's. The committed choice (docs/tracker.md) used b03872a, the
simulator the shipped model was trained on (before simulator v2).
"""
from __future__ import annotations

import argparse
import itertools
import math
import sys

import numpy as np


DUMP = r"""
import pickle, sys
import numpy as np
from needletrack.data import splits
out = {"auto": [], "policy": {}}
for name in ("val/clinical-ep", "val/hard-ep"):
    for s in splits.iter_set(name, 10, 20, size=448):
        out["auto"].append(("needle", np.stack(s.frames), np.stack(s.masks)))
for s in splits.iter_set("val/negatives", 5, 20, size=448):
    out["auto"].append(("negative", np.stack(s.frames), None))
for img, _m, _meta in splits.background_split("val"):
    out["auto"].append(("negative", np.stack([img] * 3), None))
for block in splits.liver_frames("val"):
    out["auto"].append(("negative", np.stack(block), None))
for k, n, c, t in [("clinical", "val/clinical-ep", 8, 40), ("hard", "val/hard-ep", 8, 40), ("still", "val/still", 2, 151)]:
    out["policy"][k] = [(np.stack(s.frames), np.stack(s.masks), s.meta.get("pixel_spacing_mm"))
                        for s in splits.iter_set(n, c, t, size=448)]
pickle.dump(out, open(sys.argv[1], "wb"), protocol=4)
"""


def make_data(sim_commit: str | None, path: str) -> None:
    import os
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    from needletrack.data.splits import shared_data_dir

    env = dict(os.environ, OMP_NUM_THREADS="1")
    if shared_data_dir() is not None:        # a worktree elsewhere would not find ../shared/data by itself
        env["NEEDLETRACK_SHARED_DATA"] = str(shared_data_dir())
    wt = None
    try:
        if sim_commit:
            wt = tempfile.mkdtemp(prefix="nt-tune-wt-")
            subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", wt, sim_commit], check=True,
                           capture_output=True)
            env["PYTHONPATH"] = str(Path(wt) / "src")
        subprocess.run([sys.executable, "-c", DUMP, path], check=True, env=env)
    finally:
        if wt:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", wt], capture_output=True)
            shutil.rmtree(wt, ignore_errors=True)


def auto_table(data, out):
    from needletrack.geometry import line_mask
    from needletrack.track.autoinit import AutoInitConfig, find_needle_line
    from needletrack.track.autostart import lines_agree

    clips = data["auto"]
    found = {n: [find_needle_line(f) for f in frames] for n, (_, frames, _) in enumerate(clips)}
    cfg0 = AutoInitConfig()
    out("| confirm frames | min CNR | needle clips started within 10 frames | needle-free frames reported |")
    out("|---|---|---|---|")
    for K, cnr in itertools.product((1, 2, 3), (2.0, 3.0, 4.0)):
        ok, fp, n_neg = [], 0, 0
        for n, (kind, frames, masks) in enumerate(clips):
            lines = [x if x is not None and x.cnr >= cnr else None for x in found[n]]
            start = None
            for k in range(K - 1, len(frames)):
                win = lines[k - K + 1:k + 1]
                h, w = frames[k].shape
                off = cfg0.confirm_offset_frac * math.hypot(h, w)
                if all(x is not None for x in win) and all(lines_agree(x, win[-1], cfg0.confirm_deg, off)
                                                           for x in win[:-1]):
                    start = k
                    break
            if kind == "needle":
                hit = False
                if start is not None and start < 10 and masks[start].any():
                    ln = lines[start]
                    lm = line_mask(frames[start].shape, ln.p0, ln.p1, ln.width_px)
                    hit = (lm & masks[start]).sum() / (lm | masks[start]).sum() >= 0.3
                ok.append(hit)
            else:
                n_neg += len(frames)
                fp += 0 if start is None else len(frames) - start
        out(f"| {K} | {cnr} | {np.mean(ok):.2f} | {fp / max(n_neg, 1):.3f} |")


# policy_table's configurations; --only image: tracker v2's image-support additions, one at a time from the
# settings before them (the first row) to the shipped defaults (the last row, {}).
POLICY_CONFIGS = [dict(policy="mask")] + [dict(policy="segment", segment_min_score=s, low_frac=lo, mask_rule=r)
                                          for s, lo, r in itertools.product((0.6, 0.75, 0.85), (0.5, 1.0),
                                                                            ("union", "clip"))]
_BEFORE = dict(reacquire_frames=3, carry_lost=False, coast_min_cnr=None, extend_min_cnr=None,
               keep_prompt_width=False)
IMAGE_CONFIGS = [_BEFORE, {**_BEFORE, "extend_min_cnr": 1.0}, {**_BEFORE, "extend_min_cnr": 2.0},
                 {**_BEFORE, "extend_min_cnr": 1.0, "coast_min_cnr": 4.0},
                 {**_BEFORE, "extend_min_cnr": 1.0, "coast_min_cnr": 2.0, "max_coast": 30},
                 {**_BEFORE, "extend_min_cnr": 1.0, "coast_min_cnr": 4.0, "reacquire_frames": 6},
                 {**_BEFORE, "extend_min_cnr": 1.0, "coast_min_cnr": 4.0, "reacquire_frames": 8},
                 {**_BEFORE, "extend_min_cnr": 1.0, "coast_min_cnr": 4.0, "reacquire_frames": 12},
                 {"keep_prompt_width": False}, {}]


def policy_table(data, out, configs=POLICY_CONFIGS):
    from needletrack import Tracker
    from needletrack.eval.tracking import SetScore, drift
    from needletrack.track.engine import make_engine
    from needletrack.track.tracker import shipped_tracker_settings

    sets = data["policy"]
    eng = make_engine("default", engine="auto")
    base = shipped_tracker_settings("default")
    out("| setting | clinical IoU | empty-frame acc. | withdrawn ≤2 f | hard IoU | empty-frame acc. | "
          "withdrawn ≤2 f | still late IoU | drift |")
    out("|---|---|---|---|---|---|---|---|---|")
    for cfg in configs:
        res = {}
        for k, seqs in sets.items():
            sc, ious = SetScore(), []
            for frames, masks, spacing in seqs:
                tr = Tracker(eng, **{**base, **cfg})
                pred = [tr.step(f, mask=masks[0]).mask if i == 0 else tr.step(f).mask for i, f in enumerate(frames)]
                ious.append(sc.add_sequence(list(masks), pred, spacing=spacing))
            res[k] = sc.result()
            if k == "still":
                res["drift"] = drift(ious, late=140)
        c, h, d = res["clinical"], res["hard"], res["drift"]
        out(f"| {cfg} | {c['iou']:.3f} | {c['empty_frame_accuracy']:.3f} | {c['withdrawn_reported_2f']} | "
              f"{h['iou']:.3f} | {h['empty_frame_accuracy']:.3f} | {h['withdrawn_reported_2f']} | "
              f"{d['iou_late']:.3f} | {d['drift_ratio']:.3f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["auto", "policy", "image"], default=None)
    ap.add_argument("--sim-commit", default=None, help="make the validation frames with this commit's simulator")
    ap.add_argument("--out", default=None, help="also write the tables to this markdown file")
    args = ap.parse_args(argv)
    import pickle
    import tempfile

    import torch

    torch.set_num_threads(1)
    lines = []

    def out(line):
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory() as tmp:
        make_data(args.sim_commit, f"{tmp}/val.pkl")
        with open(f"{tmp}/val.pkl", "rb") as f:
            data = pickle.load(f)
    out(f"Command: `python scripts/tune_tracker_v2.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"(validation sets only; frames by the simulator of {args.sim_commit or 'this tree'})")
    out("")
    if args.only in (None, "auto"):
        auto_table(data, out)
        out("")
    if args.only in (None, "policy"):
        policy_table(data, out)
    if args.only == "image":
        policy_table(data, out, IMAGE_CONFIGS)
    if args.out:
        from needletrack.utils import write_text_atomic

        write_text_atomic(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
