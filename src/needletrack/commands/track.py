"""`needletrack track INPUT --out DIR [--first-mask PNG | --first-line X0,Y0,X1,Y1 | --auto] [--model NAME|PATH]`."""
from __future__ import annotations

HELP = "track the needle through a cine loop (video, DICOM, image folder, .mha) from a first-frame prompt"


def add_arguments(p) -> None:
    p.add_argument("input", metavar="INPUT", help="video file, DICOM file, image folder or PLUS .mha")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: masks/, needle.csv, overlay.mp4, plot.png, summary.json")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--first-mask", metavar="PNG", help="needle mask of the first frame (0/255, frame size)")
    g.add_argument("--first-line", metavar="X0,Y0,X1,Y1",
                   help="the shaft on the first frame as a line (pixels); drawn at the shaft's width")
    g.add_argument("--auto", action="store_true",
                   help="find the needle without a prompt (training-free line detector); frames before it "
                        "is found are reported as not visible")
    p.add_argument("--model", default="default", metavar="NAME|PATH",
                   help="shipped model name, checkpoint (.safetensors) or ONNX export (.onnx file, export folder "
                        "or its manifest.json) (default: default)")
    p.add_argument("--engine", default="auto", choices=("auto", "torch", "onnx"),
                   help="inference engine (auto: ONNX Runtime on the CPU where it works, the graphs exported on "
                        "first use; PyTorch on a GPU or otherwise)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    p.add_argument("--no-overlay", action="store_true", help="skip overlay.mp4")
    p.add_argument("--save-prob", action="store_true",
                   help="also write the network's raw probability maps to DIR/prob/ (8-bit PNG, round(255 p))")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for inference (torch and ONNX Runtime)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import sys

    from needletrack.errors import NeedletrackError
    from needletrack.track.cine_to_folder import parse_line

    first_line = parse_line(args.first_line) if args.first_line else None
    if not (args.first_mask or first_line or args.auto):
        raise NeedletrackError("the first frame needs a prompt: --first-mask PNG, --first-line X0,Y0,X1,Y1 "
                               "or --auto")
    if args.max_frames is not None and args.max_frames < 1:
        raise NeedletrackError("--max-frames must be >= 1")
    if args.threads is not None and args.threads < 1:
        raise NeedletrackError("--threads must be >= 1")
    from needletrack.io import detect_format
    from needletrack.utils import check_device, prepare_out_dir, remove_created_dirs

    check_device(args.device)
    detect_format(args.input)                    # a missing or unknown input: say so before creating --out
    created = prepare_out_dir(args.out)
    try:
        with _sigterm_as_interrupt():
            return _run(args, first_line)
    except Terminated:
        remove_created_dirs(created)             # a failed first run leaves no empty folder behind
        print("needletrack track: terminated (SIGTERM); partial outputs removed", file=sys.stderr)
        return 143
    except BaseException:
        remove_created_dirs(created)
        raise


class Terminated(KeyboardInterrupt):
    """SIGTERM during ``track``: unwinds like Ctrl-C, so the partial outputs are deleted."""


def _sigterm_as_interrupt():
    import contextlib
    import signal
    import threading

    @contextlib.contextmanager
    def ctx():
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_term(signum, frame):
            raise Terminated

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    return ctx()


def _run(args, first_line) -> int:
    import sys

    from needletrack.track.cine_to_folder import track_to_folder

    if args.threads:
        import os

        import torch

        torch.set_num_threads(args.threads)
        os.environ["NEEDLETRACK_THREADS"] = str(args.threads)      # the ONNX engine's intra-op threads
    from needletrack.track import Tracker

    log = None if args.quiet else (lambda m: print(m, file=sys.stderr))
    tracker = Tracker.from_pretrained(args.model, device=args.device, engine=args.engine, log=log)
    summary = track_to_folder(args.input, args.out, tracker, first_mask=args.first_mask, first_line=first_line,
                              auto=args.auto, overlay=not args.no_overlay, max_frames=args.max_frames,
                              save_prob=args.save_prob,
                              progress=not args.quiet and sys.stderr.isatty(), model_name=str(args.model))
    from needletrack.track.cine_to_folder import format_summary

    print(format_summary(summary, args.out))
    for note in summary.get("notes", []):
        if "found no needle" in note:
            print(f"warning: {note}", file=sys.stderr)
    return 0
