"""Accuracy of a tracker on fresh simulated test sets, through the public API and the DESIGN §3 metrics.

For each preset, simulate a test set with a seed no training run uses (training simulator seeds are >= 2**31,
validation used 900000), track every sequence from its first frame's ground-truth mask (that frame is not
scored), write the predicted masks, and score them with `needletrack evaluate`'s code:

    python benchmarks/eval_simulated.py --model default --json docs/results/eval_simulated.json
    python benchmarks/eval_simulated.py --presets clinical --sequences 4 --frames 30      # a quick look

`--backgrounds DIR` adds a "clinical+real" set drawn on real ultrasound images (../shared/data/us_backgrounds
by default, skipped when absent). Sequences whose first frame shows no needle are skipped and counted.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def track_test_set(tracker_factory, root: Path, pred_root: Path) -> tuple[int, int, float]:
    """Track every sequence under ``root``; returns (tracked, skipped, ms per frame)."""
    from needletrack.data.folder import list_sequences, mask_to_png, read_sequence
    from needletrack.utils import write_png_atomic

    tracked = skipped = 0
    frames = 0
    t_total = 0.0
    for seq_dir in list_sequences(root):
        seq = read_sequence(seq_dir)
        first = seq.mask(0)
        if not first.any():          # no prompt to give: drop the sequence from the test set
            skipped += 1
            shutil.rmtree(seq_dir)
            continue
        tracker = tracker_factory()
        out = pred_root / seq.name
        for i in range(len(seq)):
            frame = seq.frame(i)
            t0 = time.perf_counter()
            res = tracker.step(frame, mask=first if i == 0 else None)
            t_total += time.perf_counter() - t0
            frames += 1
            write_png_atomic(out / f"{i:05d}.png", mask_to_png(res.mask))
        tracked += 1
    return tracked, skipped, 1000.0 * t_total / max(frames, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--engine", default="auto", choices=["auto", "torch", "onnx"])
    ap.add_argument("--presets", nargs="+", default=["clinical", "hard"])
    ap.add_argument("--backgrounds", default=str(REPO.parent / "shared" / "data" / "us_backgrounds"),
                    help="real backgrounds for the extra clinical+real set ('' to skip)")
    ap.add_argument("--sequences", type=int, default=12)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--size", type=int, default=448, help="simulated frame size (the paper's 448)")
    ap.add_argument("--seed", type=int, default=31337, help="test seed (never used in training)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--min-score", type=float, default=None,
                    help="override the visibility gate stored with the model")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from needletrack import Tracker
    from needletrack.eval.metrics import evaluate_dirs
    from needletrack.sim import write_dataset
    from needletrack.utils import write_json_atomic

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    gate = {} if args.min_score is None else {"min_score": args.min_score}
    sets = [(p, p, None) for p in args.presets]
    bg = Path(args.backgrounds) if args.backgrounds else None
    if bg is not None and (bg / "images").is_dir():
        sets.append(("clinical+real", "clinical", bg))
    results = {"model": args.model, "engine": args.engine, "min_score_override": args.min_score, "seed": args.seed, "sequences": args.sequences,
               "frames": args.frames, "size": args.size, "sets": {}}
    with tempfile.TemporaryDirectory(prefix="nt-eval-") as tmp:
        for name, preset, backgrounds in sets:
            root = Path(tmp) / name / "gt"
            pred = Path(tmp) / name / "pred"
            write_dataset(root, args.sequences, args.frames, size=args.size, seed=args.seed, preset=preset,
                          backgrounds=backgrounds, progress=False)
            tracked, skipped, ms = track_test_set(
                lambda: Tracker.from_pretrained(args.model, engine=args.engine, **gate), root, pred)
            overall = evaluate_dirs(pred, root)["overall"]
            results["sets"][name] = dict(overall, sequences_tracked=tracked, sequences_skipped=skipped,
                                         ms_per_frame=ms)
            print(f"{name:14s} IoU {overall['iou']:.3f}  Dice {overall['dice']:.3f}  "
                  f"P {overall['precision']:.3f}  R {overall['recall']:.3f}  "
                  f"per-frame IoU {overall['per_frame_iou'] or 0:.3f}  "
                  f"empty-frame acc {overall['empty_frame_accuracy'] if overall['empty_frame_accuracy'] is not None else 'n/a'}  "
                  f"tip {overall['tip_error_px'] or 0:.1f} px  angle {overall['angle_error_deg'] or 0:.1f} deg  "
                  f"({tracked} seqs, {skipped} skipped, {ms:.1f} ms/frame)", flush=True)
    if args.json:
        write_json_atomic(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
