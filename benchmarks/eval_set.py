"""Score models on one named simulated set of the harness (needletrack.data.splits), tracked from each
sequence's first mask by the shipped Tracker, with the harness's figures (needletrack.eval.tracking.SetScore).

For sets the full tracking evaluation (benchmarks/eval_tracking.py) does not hold, e.g. the clinical preset over
the held-out real backgrounds:

    python benchmarks/eval_set.py --set test/clinical+real --model weights/default.safetensors --model runs/x.safetensors

Every model is tracked with the settings stored in its weights file (as Tracker.from_pretrained does).
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", required=True, help="a named set, e.g. test/clinical+real (needletrack.data.splits)")
    ap.add_argument("--model", action="append", required=True, help="weights file or model name; repeatable")
    ap.add_argument("--sequences", type=int, default=12)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    import numpy as np
    import torch

    from needletrack import Tracker
    from needletrack.data import splits
    from needletrack.errors import NeedletrackError
    from needletrack.eval.tracking import SetScore

    torch.set_num_threads(1)
    try:
        seqs = list(splits.iter_set(args.set, args.sequences, args.frames, size=args.size))
    except (NeedletrackError, KeyError, ValueError) as e:
        print(f"eval_set: {e}", file=sys.stderr)
        return 2
    if not seqs:
        print(f"eval_set: {args.set} gave no sequences here (its real data absent?)", file=sys.stderr)
        return 2
    out = {"set": args.set, "sequences": len(seqs), "frames": args.frames, "size": args.size, "models": {}}
    for m in args.model:
        t0 = time.time()
        sc = SetScore()
        tr = Tracker.from_pretrained(m)        # one engine per model; reset() between sequences, as the harness
        for s in seqs:
            tr.reset()
            pred = [tr.step(f, mask=s.masks[0]).mask if i == 0 else tr.step(f).mask for i, f in enumerate(s.frames)]
            sc.add_sequence(list(np.asarray(s.masks)), pred, spacing=s.meta.get("pixel_spacing_mm"),
                            entry_side=s.meta.get("entry_side"))
        r = sc.result()
        out["models"][m] = r
        print(f"{m}: {args.set} IoU {r['iou']:.3f} Dice {r['dice']:.3f} empty-frame acc {r['empty_frame_accuracy']} "
              f"({r['scored_frames']} frames, {time.time() - t0:.0f} s)", flush=True)
    if args.json:
        from needletrack.utils import write_json_atomic

        write_json_atomic(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
