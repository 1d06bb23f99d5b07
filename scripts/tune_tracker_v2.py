"""How tracker v2's settings were chosen: on the harness's validation sets only, never a test set.

Two tables:

1. **Auto start** (``AutoInitConfig``): for each detector/start configuration in ``AUTO_CONFIGS``, the tracker
   itself (``Tracker(auto=True)``, shipped weights) run as the harness runs it (benchmarks/eval_tracking.py):
   the share of validation needle clips (``val/clinical-ep``, ``val/hard-ep``, ``--auto-clips`` × 20 frames,
   each starting where the needle first shows) with IoU >= 0.5 on one of frames 0..9, the share of needle-free
   frames reported visible (``val/negatives`` 5 × 20, the real backgrounds' val images as 5-frame stills, the
   liver sweep's val block), and the detector's ms per frame while searching (median, p95).
2. **Segment policy** (``segment_min_score``, ``low_frac``, ``mask_rule``) against the v1 mask policy, with the
   shipped weights, on ``val/clinical-ep`` and ``val/hard-ep`` (8 × 40) and ``val/still`` (2 × 151).

    python scripts/tune_tracker_v2.py --sim-commit b03872a --out docs/results/tune_tracker_v2.md
    python scripts/tune_tracker_v2.py --only auto --sim-commit 5f5e3c9 --out docs/results/tune_tracker_v2_auto_simv2.md

``--sim-commit`` makes the validation frames with that commit's simulator (a temporary git worktree, in a
subprocess); the tracker is always this tree's. The committed choice (docs/tracker.md) used b03872a, the
simulator the shipped model was trained on (before simulator v2).
"""
from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np


DUMP = r"""
import pickle, sys
import numpy as np
from needletrack.data import splits
out = {"auto": [], "policy": {}}
only, auto_clips = sys.argv[2], int(sys.argv[3])
for name in ("val/clinical-ep", "val/hard-ep"):
    for s in splits.iter_set(name, auto_clips, 20, size=448):
        out["auto"].append((name.split("/")[1].split("-")[0], np.stack(s.frames), np.stack(s.masks)))
for s in splits.iter_set("val/negatives", 5, 20, size=448):
    out["auto"].append(("negatives", np.stack(s.frames), None))
for img, _m, _meta in splits.background_split("val"):
    out["auto"].append(("real-stills", np.stack([img] * 5), None))
for block in splits.liver_frames("val"):
    out["auto"].append(("liver", np.stack(block), None))
policy_sets = [("clinical", "val/clinical-ep", 8, 40), ("hard", "val/hard-ep", 8, 40), ("still", "val/still", 2, 151)]
for k, n, c, t in [] if only == "auto" else policy_sets:
    out["policy"][k] = [(np.stack(s.frames), np.stack(s.masks), s.meta.get("pixel_spacing_mm"))
                        for s in splits.iter_set(n, c, t, size=448)]
pickle.dump(out, open(sys.argv[1], "wb"), protocol=4)
"""


def make_data(sim_commit: str | None, path: str, only: str | None = None, auto_clips: int = 10) -> None:
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
            p = subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", wt, sim_commit],
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise ValueError(f"--sim-commit {sim_commit!r}: not a commit of this repository "
                                 f"({(p.stderr.strip().splitlines() or ['git worktree add failed'])[-1]})")
            env["PYTHONPATH"] = str(Path(wt) / "src")
        subprocess.run([sys.executable, "-c", DUMP, path, str(only), str(auto_clips)], check=True, env=env)
    finally:
        if wt:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", wt], capture_output=True)
            shutil.rmtree(wt, ignore_errors=True)


# auto_table's configurations (AutoInitConfig overrides): the detector before the edge rule (first row), the
# rule that a needle comes in from the image's edge alone, then with the pushed-in start (the shipped defaults,
# {}) and variants of it
AUTO_BEFORE = dict(n_orient=24, pyramid=(1, 2, 4), max_candidates=12, max_edge_frac=1.0, motion_start=False)
AUTO_CONFIGS = [AUTO_BEFORE, dict(motion_start=False), {}, dict(motion_min_advance_frac=0.002),
                dict(motion_min_advance_frac=0.0035), dict(centre_shift=0.0), dict(pyramid=(1,)),
                dict(max_candidates=30), dict(n_orient=8)]


def auto_table(data, out, configs=AUTO_CONFIGS):
    """Tracker(auto=True) on each clip, scored as the harness scores it (needletrack.eval.tracking)."""
    import time

    from needletrack import Tracker
    from needletrack.eval.metrics import frame_iou
    from needletrack.track.autoinit import AutoInitConfig
    from needletrack.track.engine import make_engine
    from needletrack.track.tracker import shipped_tracker_settings

    eng = make_engine("default", engine="auto")
    base = shipped_tracker_settings("default")
    free = ("negatives", "real-stills", "liver")
    out("| setting | clinical found ≤ 10 f | hard found ≤ 10 f | FP sim negatives | FP real stills | FP liver | "
        "FP all needle-free | ms searching (median / p95) |")
    out("|---|---|---|---|---|---|---|---|")
    for cfg in configs:
        found, fp, nf, ms = {}, dict.fromkeys(free, 0), dict.fromkeys(free, 0), []
        for kind, frames, masks in data["auto"]:
            tr = Tracker(eng, **base, autoinit_cfg=AutoInitConfig(**cfg))
            n = 10 if masks is not None else len(frames)     # FOUND_WINDOW: only frames 0..9 count
            hit = False
            for i in range(n):
                t0 = time.perf_counter()
                r = tr.step(frames[i], auto=(i == 0))
                if r.source == "search" or tr.first_found == i:
                    ms.append(1000.0 * (time.perf_counter() - t0))
                if masks is None:
                    fp[kind] += bool(r.visible)
                elif masks[i].any() and frame_iou(np.asarray(r.mask, bool), masks[i]) >= 0.5:
                    hit = True
            if masks is None:
                nf[kind] += n
            else:
                found.setdefault(kind, []).append(hit)
        rate = {k: fp[k] / nf[k] if nf[k] else float("nan") for k in free}
        fp_all = sum(fp.values()) / max(1, sum(nf.values()))
        out(f"| {cfg} | {np.mean(found['clinical']):.2f} | {np.mean(found['hard']):.2f} | "
            + " | ".join(f"{rate[k]:.3f}" for k in free)
            + f" | {fp_all:.3f} | {np.median(ms):.0f} / {np.percentile(ms, 95):.0f} |")


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
    ap.add_argument("--auto-clips", type=int, default=10, help="needle clips per preset in the auto table")
    args = ap.parse_args(argv)
    if args.auto_clips < 1:
        ap.error(f"--auto-clips must be at least 1, got {args.auto_clips}")
    import pickle
    import tempfile

    import torch

    torch.set_num_threads(1)
    lines = []

    def out(line):
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory() as tmp:
        try:
            make_data(args.sim_commit, f"{tmp}/val.pkl", args.only, args.auto_clips)
        except ValueError as e:
            print(f"tune_tracker_v2: {e}", file=sys.stderr)
            return 2
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
