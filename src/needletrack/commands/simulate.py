"""`needletrack simulate`: write simulated needle-insertion sequences in the data set folder format."""
from __future__ import annotations

from pathlib import Path

HELP = "simulate ultrasound needle-insertion sequences with exact ground truth (data set folder format)"


def _size(text: str):
    import argparse

    try:
        if "x" in text.lower():
            h, w = (int(v) for v in text.lower().split("x"))
        else:
            h = w = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (use S or HxW, e.g. 448 or 384x512)") from None
    if h < 32 or w < 32 or h > 4096 or w > 4096:
        raise argparse.ArgumentTypeError(f"size {text!r} out of range (32..4096)")
    return (h, w)


def _positive(text: str) -> int:
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def add_arguments(p) -> None:
    from needletrack.sim.config import PRESETS

    p.add_argument("out_root", metavar="OUT_ROOT", help="output folder (one sub-folder per sequence)")
    p.add_argument("--sequences", type=_positive, default=4, help="number of sequences (default 4)")
    p.add_argument("--frames", type=_positive, default=50, help="frames per sequence (default 50)")
    p.add_argument("--size", type=_size, default=(448, 448), help="frame size S or HxW (default 448)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same data (default 0)")
    p.add_argument("--backgrounds", metavar="DIR", default=None,
                   help="folder of real ultrasound frames (images/ + masks/ + index.json, or flat) to use as tissue")
    p.add_argument("--real-fraction", type=float, default=1.0,
                   help="with --backgrounds: share of sequences on a real background (default 1.0)")
    p.add_argument("--preset", choices=list(PRESETS), default="clinical",
                   help="difficulty or scene (default clinical, paper-like; bench: a needle in water or gel over a "
                        "tissue block, as bench recordings look)")
    p.add_argument("--frame-step", type=_positive, default=None,
                   help="output every k-th frame of the 25 fps acquisition (default: random, 1 or 5-10 as in the paper)")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty OUT_ROOT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from needletrack.errors import InputError, NeedletrackError
    from needletrack.data.simulated import write_dataset
    from needletrack.sim import load_backgrounds

    out = Path(args.out_root)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise InputError("folder is not empty (use --overwrite to write into it)", out)
    if not 0.0 <= args.real_fraction <= 1.0:
        raise NeedletrackError(f"--real-fraction must be within 0..1, got {args.real_fraction}")
    bgs = None
    if args.backgrounds is not None:
        bdir = Path(args.backgrounds)
        if not bdir.is_dir():
            raise InputError("no such folder (--backgrounds)", bdir)
        bgs = load_backgrounds(bdir)
        if not bgs:
            raise InputError("no readable background images found (--backgrounds)", bdir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create folder ({e.strerror})", out) from None
    paths = write_dataset(out, args.sequences, args.frames, size=args.size, seed=args.seed, backgrounds=bgs,
                          preset=args.preset, progress=not args.no_progress, frame_step=args.frame_step,
                          real_fraction=args.real_fraction)
    print(f"wrote {len(paths)} sequence(s) x {args.frames} frame(s) to {out}")
    return 0
