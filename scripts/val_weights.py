"""Score weight files on a training config's validation sets, as training scores its checkpoints (tracker v2,
``needletrack.train.validation.evaluate_model``): to compare a new run's best against the shipped model on the
same sets when the simulator changed under them.

    python scripts/val_weights.py configs/train/stage9_cpu.yaml weights/default.safetensors runs/stage9/best.safetensors
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="a training config (its val: section is used)")
    ap.add_argument("weights", nargs="+", help="weight files to score")
    args = ap.parse_args(argv)
    from needletrack.errors import NeedletrackError
    from needletrack.models.weights import load_model
    from needletrack.train.config import load_config
    from needletrack.train.validation import build_val_set, evaluate_model

    try:
        for w in args.weights:
            if not Path(w).is_file():
                raise NeedletrackError(f"no weights file {w}")
        cfg = load_config(args.config)
        vs = build_val_set(cfg.val, (cfg.size, cfg.size))
        for w in args.weights:
            t = time.time()
            res = evaluate_model(load_model(w, device="cpu").eval(), vs, cfg.val, "cpu")
            ov = res["overall"]
            per = {k: round(v["iou"], 4) for k, v in res.items() if k != "overall" and isinstance(v, dict) and "iou" in v}
            emp = ov.get("empty_frame_accuracy")
            emp = "n/a" if emp is None else f"{emp:.4f}"     # no needle-free frame in the sets
            print(f"{w}: IoU {ov['iou']:.4f} Dice {ov['dice']:.4f} empty-frame acc {emp} "
                  f"per set {per} ({time.time() - t:.0f} s)", flush=True)
    except NeedletrackError as e:
        print(f"val_weights: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
