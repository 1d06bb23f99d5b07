"""`needletrack train CONFIG [--out DIR] [--resume]`: train a model; the same under torchrun for DDP."""
from __future__ import annotations

HELP = "train a model from a YAML config (clips, augmentation, rollout); also under torchrun --nproc_per_node=N"


def add_arguments(p) -> None:
    p.add_argument("config", help="training config YAML (e.g. configs/train/default.yaml)")
    p.add_argument("--out", default=None, help="output folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt exactly where it stopped (starts fresh if none)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda if available")
    p.add_argument("--steps", type=int, default=None, help="override the config's total number of steps")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop (with a checkpoint) after N steps of this run; continue later with --resume")
    p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help="stop (with a checkpoint) once this run has trained for M minutes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    import os
    import shlex
    import sys
    from pathlib import Path

    from needletrack.errors import NeedletrackError
    from needletrack.train.loop import train

    if args.steps is not None and args.steps < 1:
        raise NeedletrackError(f"--steps must be >= 1, got {args.steps}")
    if args.stop_after is not None and args.stop_after < 1:
        raise NeedletrackError(f"--stop-after must be >= 1, got {args.stop_after}")
    if args.device == "cuda":
        from needletrack.utils import check_device

        check_device("cuda")
    out = args.out or str(Path("runs") / Path(args.config).stem)
    command = "needletrack " + shlex.join(sys.argv[1:])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        command = f"torchrun --nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', '?')} -m {command}"
    summary = train(args.config, out, resume=args.resume, device=args.device, steps=args.steps,
                    stop_after=args.stop_after, max_minutes=args.max_minutes, command=command,
                    progress=not args.no_progress)
    return 130 if summary.get("stopped") == "interrupted" else 0
