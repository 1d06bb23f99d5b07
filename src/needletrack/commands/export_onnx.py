"""`needletrack export-onnx`: the model as deployed graphs (key, value, memory read, decoder) + manifest."""
from __future__ import annotations

import argparse

HELP = ("Export a model to ONNX for the onnxruntime engine: key encoder (+flow), value encoder, memory read "
        "(fixed memory slots) and decoder graphs with a manifest.")


def add_arguments(p) -> None:
    p.add_argument("--model", default="default",
                   help="model name (weights/<name>.safetensors) or checkpoint path (default: default)")
    p.add_argument("--out", required=True, help="output folder (created; a previous export there is replaced)")
    p.add_argument("--size", type=int, default=None, help="input size (default: the model's)")
    p.add_argument("--memory-slots", type=int, default=None, dest="memory_slots",
                   help="memory slots in the read graph: the first frame + the recent ring (default: the "
                        "model config's mem_frames, 9)")
    p.add_argument("--slots", type=int, default=None, dest="memory_slots", help=argparse.SUPPRESS)  # old spelling
    p.add_argument("--int8", action="store_true",
                   help="also write static int8 (QDQ) graphs calibrated on simulated frames")
    p.add_argument("--untrained", action="store_true",
                   help="allow a preset name with no weights file: export it with random weights (for tests)")
    p.add_argument("--verify", action="store_true",
                   help="track a short simulated clip with torch and the exported graphs and compare")


def _load(args):
    from needletrack.models import load_model

    model = load_model(args.model, allow_random=args.untrained)
    src = getattr(model, "weights_path", None)
    return model, src


def run(args) -> int:
    import sys
    import time
    from pathlib import Path

    from needletrack.errors import NeedletrackError

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NeedletrackError("exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise NeedletrackError("folder is not empty and holds no previous export (manifest.json); "
                               "choose an empty or new folder", out)
    if args.size is not None and (args.size < 32 or args.size % 32):
        raise NeedletrackError(f"--size must be a positive multiple of 32, got {args.size}")
    if args.memory_slots is not None and args.memory_slots < 2:
        raise NeedletrackError(f"--memory-slots (--slots) must be >= 2, got {args.memory_slots}")
    t0 = time.perf_counter()
    from needletrack.track.onnx_export import export_model, file_sha256

    model, src = _load(args)
    man = export_model(model, out, input_hw=args.size, memory_slots=args.memory_slots, source=src,
                       source_sha256=file_sha256(src) if src else None)
    print(f"exported {man['model']} at {man['input_size'][0]}x{man['input_size'][1]} to {out}: "
          + ", ".join(f"{g['file']} ({g['bytes'] / 1e6:.1f} MB)" for g in man["graphs"].values())
          + (f"; memory {man['memory_slots']} slots, top-k {man['top_k']}" if man["is_memory_model"] else ""))
    if args.int8:
        from needletrack.track.onnx_engine import ensure_int8

        man = ensure_int8(out, rebuild=True)
        print(f"int8 (QDQ) graphs: " + ", ".join(g["file"] for g in man["variants"]["int8"].values())
              + f" (calibrated on {sum(man['int8']['calibration']['samples'].values())} recorded inputs)")
    if args.verify:
        worst = verify(model, out)
        print(f"verify: max |prob torch - prob onnx| = {worst['max_prob_diff']:.2e}, "
              f"min IoU = {worst['min_iou']:.4f} over {worst['frames']} frames")
        if worst["max_prob_diff"] > 1e-3 or worst["min_iou"] < 0.99:
            print("verify: FAILED (tolerance: 1e-3 probability, IoU 0.99)", file=sys.stderr)
            return 1
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


def verify(model, folder, frames: int = 12) -> dict:
    """Track a short simulated clip with torch and with the export; the worst per-frame differences."""
    import numpy as np

    from needletrack.sim import simulate_sequence
    from needletrack.track.onnx_engine import OnnxEngine
    from needletrack.track.tracker import Tracker

    eng = OnnxEngine(folder)
    clip = [(f, m) for f, m, _ in simulate_sequence(frames + 8, size=eng.input_hw, preset="clinical", seed=11)]
    k = next((i for i, (_, m) in enumerate(clip) if m.any()), 0)
    clip = clip[k:k + frames]
    outs = []
    for e in (model, eng):
        tr = Tracker(e, input_size=eng.input_hw if e is model else None, mem_every=2, mem_min_score=0.0)
        res = []
        for i, (f, m) in enumerate(clip):
            res.append(tr.step(f, mask=m) if i == 0 else tr.step(f))
        outs.append(res)
    diff, iou = 0.0, 1.0
    for a, b in zip(*outs):
        diff = max(diff, float(np.abs(a.prob - b.prob).max()))
        u = np.logical_or(a.mask, b.mask).sum()
        iou = min(iou, float(np.logical_and(a.mask, b.mask).sum() / u) if u else 1.0)
    return {"max_prob_diff": diff, "min_iou": iou, "frames": len(clip)}
