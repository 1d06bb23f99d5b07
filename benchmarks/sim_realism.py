"""How well a simple classifier tells simulated frames from real ones (the pinned realism yardstick).

Real side: the test split of the shared real data (``needletrack.data.splits``): the held-out BUSI images,
every usgra-seg (nerve) and DL_Track (muscle) image, and the liver sweep's test block. Simulated side: the
frozen test sets ``test/easy``, ``test/clinical``, ``test/hard`` (synthetic tissue) and ``test/clinical+real``
drawn over the *train* split of the real backgrounds, as training sees them. Needle-free patches only.
Features and classifiers: ``needletrack.eval.realism`` (pinned; do not tune).

Two controls are reported with the figures: the simulator as it stands must score >= 0.85 against the
real images (the classifier can see what it should see), and two halves of the real image groups
(alternating within each source) must score 0.45-0.60 (it does not see differences that are not there).

    python benchmarks/sim_realism.py --out docs/results/realism          # full (about 3 min on 2 cores)
    python benchmarks/sim_realism.py --quick                              # under a minute
    python benchmarks/sim_realism.py --real-split train --quick           # the development yardstick
    python benchmarks/sim_realism.py --real-split train --kinds clinical --explain 8   # what tells them apart

``--real-split train`` (the development yardstick): the same pinned features and classifiers against the real
*train* split (BUSI train images, every 4th frame of the liver sweep's train blocks), the split the simulator is
calibrated and tuned on; the simulated side then uses the ``val/<kind>`` sets and ``clinical+real`` is drawn over
the *val* split's backgrounds (no real image on both sides). Tune only against this; the default (test split) is
for the report.

Skips cleanly (exit 0, a message) where ../shared/data is absent. Data for outside users: the public
sources listed in each shared folder's SOURCES.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIM_KINDS = ("easy", "clinical", "hard", "clinical+real")


def real_patches(rng, per_image: int, liver_every: int = 4, split: str = "test"):
    """(features, groups, sources) of the real ``split``'s needle-free patches."""
    from needletrack.data import splits
    from needletrack.eval.realism import image_patches, patch_features

    feats, groups, sources = [], [], []
    for img, _mask, meta in splits.background_split(split):
        p = image_patches(img, rng, per_image)
        if len(p):
            feats.append(patch_features(p))
            groups += [meta["name"]] * len(p)
            sources += [splits.background_group(meta)] * len(p)
    for b, block in enumerate(splits.liver_frames(split)):
        for k in range(0, len(block), liver_every):
            p = image_patches(block[k], rng, per_image)
            if len(p):
                feats.append(patch_features(p))
                groups += [f"liver_{split}_{b}_{k // 8}"] * len(p)   # 8-frame stretches of the sweep
                sources += ["liver_sweep"] * len(p)
    if not feats:
        return None, [], []
    return np.concatenate(feats), groups, sources


def sim_patches(kind: str, rng, sequences: int, per_frame: int, frames=(0, 6, 11), sim_split: str = "test",
                bg_split: str = "train"):
    from needletrack.data import splits
    from needletrack.eval.realism import image_patches, patch_features

    bgs = splits.background_split(bg_split) if kind == "clinical+real" else None
    if kind == "clinical+real" and not bgs:
        return None, []
    feats, groups = [], []
    for seq in splits.iter_set(f"{sim_split}/{kind}", sequences, max(frames) + 1, size=448, backgrounds=bgs):
        for k in frames:
            p = image_patches(seq.frames[k], rng, per_frame, exclude=seq.masks[k])
            if len(p):
                feats.append(patch_features(p))
                groups += [seq.name] * len(p)
    return np.concatenate(feats), groups


def halves(groups, sources, seed: int):
    """Label of each real patch for the real-against-real control: within each source, the image groups
    are shuffled (``seed``) and dealt alternately to half 0 and half 1, so both halves hold every source."""
    r = np.random.default_rng(seed)
    half = {}
    for src in sorted(set(sources)):
        names = sorted({g for g, s in zip(groups, sources) if s == src})
        for i, k in enumerate(r.permutation(len(names))):
            half[names[k]] = i % 2
    return np.array([half[g] for g in groups])


def real_vs_real(X, groups, sources, repeats: int) -> dict:
    """The control, averaged over ``repeats`` random halvings (one halving alone swings by about ±0.05:
    with ~110 groups, grouped cross-validation of labels that carry no signal scatters around 0.5)."""
    from needletrack.eval.realism import classify

    runs = []
    for k in range(repeats):
        h = halves(groups, sources, seed=k)
        runs.append(classify(X[h == 0], [g for g, j in zip(groups, h) if j == 0],
                             X[h == 1], [g for g, j in zip(groups, h) if j == 1], seed=k))
    out = {m: float(np.mean([r[m] for r in runs])) for m in ("random_forest", "logistic_regression")}
    out.update({f"{m}_runs": [round(r[m], 4) for r in runs] for m in ("random_forest", "logistic_regression")})
    out.update(n_a=runs[0]["n_a"], n_b=runs[0]["n_b"], repeats=repeats)
    out["ok"] = bool(0.45 <= out["random_forest"] <= 0.60)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer sequences and patches (under a minute)")
    ap.add_argument("--sequences", type=int, default=None, help="simulated sequences per set (default 40; quick 12)")
    ap.add_argument("--kinds", nargs="+", default=list(SIM_KINDS), choices=SIM_KINDS)
    ap.add_argument("--seed", type=int, default=0, help="patch sampling and cross-validation seed")
    ap.add_argument("--real-split", default="test", choices=("test", "train"),
                    help="real side: test (the report; default) or train (the development yardstick: simulated "
                         "side from the val sets, clinical+real over the val backgrounds)")
    ap.add_argument("--explain", type=int, default=0, metavar="N",
                    help="also print, per set, the N single features that tell simulated from real patches best "
                         "(area under the ROC curve of each feature alone; a diagnostic, not the score)")
    ap.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = ap.parse_args(argv)

    from needletrack.data import splits
    from needletrack.eval.realism import classify

    if splits.backgrounds_dir() is None:
        print("sim_realism: the shared real data (../shared/data/us_backgrounds) is absent; nothing to compare")
        return 0
    t0 = time.time()
    seqs = args.sequences or (12 if args.quick else 40)
    per_image = 8 if args.quick else 16
    rng = np.random.default_rng(args.seed)
    dev = args.real_split == "train"
    sim_split, bg_split = ("val", "val") if dev else ("test", "train")
    Xr, gr, sr = real_patches(rng, per_image, split=args.real_split)
    res = {"command": "python benchmarks/sim_realism.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "sim_split": sim_split, "clinical_real_backgrounds": bg_split,
           "real": {"split": args.real_split, "patches": int(len(Xr)), "groups": len(set(gr)),
                    "sources": {s: sr.count(s) for s in sorted(set(sr))}},
           "sim_sequences": seqs, "patch": 32, "scale": 256, "sets": {}}
    ctrl = real_vs_real(Xr, gr, sr, repeats=3 if args.quick else 5)
    res["control_real_vs_real"] = ctrl
    print(f"control real-vs-real halves (mean of {ctrl['repeats']} halvings): RF {ctrl['random_forest']:.3f} "
          f"{ctrl['random_forest_runs']}  LR {ctrl['logistic_regression']:.3f} "
          f"(must be 0.45-0.60: {'ok' if ctrl['ok'] else 'FAILED'})", flush=True)
    for kind in args.kinds:
        Xs, gs = sim_patches(kind, rng, seqs, per_frame=per_image, sim_split=sim_split, bg_split=bg_split)
        if Xs is None:
            print(f"{kind:14s} skipped (no {bg_split}-split backgrounds)")
            continue
        r = classify(Xs, gs, Xr, gr, seed=args.seed)
        res["sets"][kind] = r
        print(f"{kind:14s} RF {r['random_forest']:.3f}  LR {r['logistic_regression']:.3f}  "
              f"({r['n_a']} sim / {r['n_b']} real patches, {r['folds']} grouped folds)", flush=True)
        if args.explain:
            from needletrack.eval.realism import feature_report

            r["explain"] = feature_report(Xs, Xr, top=args.explain)
            for f in r["explain"]:
                print(f"    {f['feature']:14s} AUC {f['auc_real_higher']:.3f}  median sim {f['median_sim']:.3f}  "
                      f"real {f['median_real']:.3f}")
    if "clinical" in res["sets"] and not dev:
        c = res["sets"]["clinical"]["random_forest"]
        res["control_simulator_now"] = {"random_forest": c, "ok_if_simulator_unchanged": bool(c >= 0.85),
                                        "note": "the simulator of 562c1e4 must score >= 0.85; a better simulator "
                                                "scores lower, down to 0.5"}
    res["wall_s"] = round(time.time() - t0, 1)
    print(f"({res['wall_s']} s)")
    if args.out:
        from needletrack.utils import write_json_atomic, write_text_atomic

        write_json_atomic(f"{args.out}.json", res)
        write_text_atomic(f"{args.out}.md", to_markdown(res))
    return 0


def to_markdown(res: dict) -> str:
    lines = [f"Command: `{res['command']}` ({res['wall_s']} s). Needle-free 32×32 patches at the 256-px scale; "
             f"real side: the {res['real']['split']} split ({res['real']['patches']} patches from {res['real']['groups']} groups: "
             + ", ".join(f"{k} {v}" for k, v in res["real"]["sources"].items())
             + f"); {res['sim_sequences']} simulated sequences per set ({res.get('sim_split', 'test')}/<kind>). Balanced accuracy, grouped 5-fold "
               "cross-validation; 0.5 = indistinguishable.", "",
             "| set | random forest | logistic regression | sim patches | real patches |", "|---|---|---|---|---|"]
    c = res["control_real_vs_real"]
    lines.append(f"| control: real vs real (two halves, mean of {c['repeats']} halvings) | {c['random_forest']:.3f} | {c['logistic_regression']:.3f} "
                 f"| {c['n_a']} | {c['n_b']} |")
    for k, r in res["sets"].items():
        label = k + (f" (over {res.get('clinical_real_backgrounds', 'train')}-split real backgrounds)"
                     if k == "clinical+real" else "")
        lines.append(f"| {label} | {r['random_forest']:.3f} | {r['logistic_regression']:.3f} | {r['n_a']} | {r['n_b']} |")
    for k, r in res["sets"].items():
        if r.get("explain"):
            lines += ["", f"**{k}: the single features that tell simulated from real best** (AUC of the feature alone, "
                          "real the positive class: below 0.5 = lower on real patches)", "",
                      "| feature | AUC | median sim | median real |", "|---|---|---|---|"]
            lines += [f"| {f['feature']} | {f['auc_real_higher']:.3f} | {f['median_sim']:.3f} | {f['median_real']:.3f} |"
                      for f in r["explain"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
