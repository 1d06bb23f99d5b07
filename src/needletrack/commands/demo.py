"""`needletrack demo`: simulate a built-in sample, track it with the shipped model, print the metrics."""
from __future__ import annotations

import dataclasses

HELP = "track a built-in simulated needle insertion with the shipped model; writes an overlay and prints metrics"

DEMO_SEED = 7
DEMO_FRAMES = 60
DEMO_PRESET = "clinical"
DEMO_THREADS = 1           # measured: 2 torch threads at load 5 ran 334-476 ms/frame, 1 thread 25 ms
THREADS_ENV = "NEEDLETRACK_THREADS"


def add_arguments(p) -> None:
    p.add_argument("--out", default="needletrack-demo", metavar="DIR",
                   help="output folder (default: ./needletrack-demo): sample/, masks/, needle.csv, overlay.mp4, "
                        "summary.json")
    p.add_argument("--model", default="default", metavar="NAME|PATH",
                   help="model to run (default: the shipped 'default')")
    p.add_argument("--frames", type=int, default=DEMO_FRAMES, metavar="N", help=f"frames (default {DEMO_FRAMES})")
    p.add_argument("--size", type=int, metavar="S", help="frame size (default: the model's input size)")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help=f"simulation seed (default {DEMO_SEED})")
    p.add_argument("--engine", default="auto", choices=("auto", "torch", "onnx"),
                   help="inference engine (default auto: ONNX Runtime on the CPU, exported once on first use in "
                        "about a second and cached; torch when that is not possible)")
    p.add_argument("--threads", type=int, metavar="N",
                   help=f"CPU threads for inference (default ${THREADS_ENV} or {DEMO_THREADS}: one thread keeps "
                        "its speed on a busy machine, where more threads collapse)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def load_demo_model(name: str, warn):
    """The shipped model, or (only for the name 'default' when its weights are missing) an untrained
    stnan_fast with a loud warning. Returns (model, label)."""
    from needletrack.models import build_model, load_model

    if name != "default" or default_weights_exist():
        return load_model(name), name
    warn(FALLBACK_WARNING)
    return build_model("stnan_fast"), "stnan_fast (untrained)"


FALLBACK_WARNING = ("WARNING: the shipped model weights/default.safetensors is missing: tracking with an UNTRAINED "
                    "stnan_fast (random weights); the masks and metrics below mean nothing")


def default_weights_exist() -> bool:
    from needletrack.models.weights import resolve_weights

    try:
        return resolve_weights("default").is_file()
    except Exception:  # noqa: BLE001 - resolution problems count as "missing"
        return False


def demo_threads(arg: int | None) -> int:
    """--threads, else $NEEDLETRACK_THREADS, else DEMO_THREADS."""
    import os

    from needletrack.errors import NeedletrackError

    if arg is not None:
        if arg < 1:
            raise NeedletrackError("--threads must be >= 1")
        return arg
    env = os.environ.get(THREADS_ENV)
    if env:
        try:
            if int(env) >= 1:
                return int(env)
        except ValueError:
            pass
        raise NeedletrackError(f"{THREADS_ENV} must be a positive integer, got {env!r}")
    return DEMO_THREADS


def run(args) -> int:
    import torch

    threads = demo_threads(args.threads)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(args, threads)
    finally:
        torch.set_num_threads(old)


def _run(args, threads: int) -> int:
    import os
    import sys
    import time
    from pathlib import Path

    from needletrack.errors import NeedletrackError

    if args.frames < 2:
        raise NeedletrackError("--frames must be >= 2")
    if args.size is not None and args.size < 32:
        raise NeedletrackError("--size must be >= 32")
    t_start = time.perf_counter()
    from needletrack.data.folder import SequenceWriter, read_sequence
    from needletrack.models import build_model
    from needletrack.sim import simulate_sequence
    from needletrack.sim.config import preset as sim_preset
    from needletrack.track import Tracker
    from needletrack.track.engine import make_engine
    from needletrack.track.cine_to_folder import track_to_folder

    out = Path(args.out)
    saved = os.environ.get(THREADS_ENV)
    os.environ[THREADS_ENV] = str(threads)          # the ONNX engine's intra-op threads, read when it is made
    try:
        if args.model == "default" and not default_weights_exist():
            print(FALLBACK_WARNING, file=sys.stderr)
            engine = make_engine(build_model("stnan_fast"),
                                 engine="torch" if args.engine == "auto" else args.engine)
            label = "stnan_fast (untrained)"
        else:
            log = None if args.quiet else (lambda m: print(f"needletrack demo: {m}", file=sys.stderr))
            engine = make_engine(args.model, engine=args.engine, log=log)
            label = str(args.model)
    finally:
        if saved is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = saved
    engine_name = getattr(engine, "name", None) or "torch"
    threads_used = int(getattr(engine, "threads", None) or threads)
    size = args.size or engine.input_hw[0]

    # 1. the built-in sample: a simulated insertion (fixed seed), written as a data set folder
    seq_dir = out / "sample"
    if (seq_dir / "frames").is_dir():        # a previous demo's sample: replace it whole
        import shutil

        shutil.rmtree(seq_dir)
    # the sample starts with the needle in view (the clinical preset sometimes has it enter later), so the
    # first frame can prompt the tracker whatever the simulator's version
    cfg = dataclasses.replace(sim_preset(DEMO_PRESET), first_visible_prob=1.0)
    sim = simulate_sequence(args.frames, size, cfg, args.seed)
    meta = dict(getattr(sim, "meta", None) or {"fps": 25})
    meta.setdefault("source", f"needletrack.sim preset={DEMO_PRESET} seed={args.seed}")
    with SequenceWriter(out, "sample", meta) as w:
        for frame, mask, needle in sim:
            w.add(frame, mask, needle)
    seq = read_sequence(seq_dir)
    first = seq.mask(0)
    if not first.any():
        raise NeedletrackError(f"the simulated sample has no needle on its first frame (seed {args.seed}); "
                               "try another --seed")

    # 2. track it like a user's cine, scoring against the simulator's ground truth
    tracker = Tracker(engine)
    summary = track_to_folder(seq_dir / "frames", out, tracker, first_mask=first,
                              progress=not args.quiet and sys.stderr.isatty(), model_name=label, gt=seq.mask)
    m = summary["metrics"]

    def f(v, fmt="{:.3f}"):
        return "n/a" if v is None else fmt.format(v)

    print(f"needletrack demo: {summary['frames']} simulated frames ({size}×{size}, preset {DEMO_PRESET}, "
          f"seed {args.seed}) tracked with {label} [engine {summary.get('engine') or engine_name}, "
          f"{threads_used} thread{'s' if threads_used != 1 else ''}]")
    print(f"  IoU {f(m['iou'])}  Dice {f(m['dice'])}  precision {f(m['precision'])}  recall {f(m['recall'])}  "
          f"per-frame IoU {f(m['per_frame_iou'])}  empty-frame accuracy {f(m['empty_frame_accuracy'])}")
    print(f"  tip error {f(m['tip_error_px'], '{:.1f}')} px ({f(m['tip_error_mm'], '{:.2f}')} mm)  "
          f"angle error {f(m['angle_error_deg'], '{:.1f}')} deg  "
          f"speed {summary['ms_per_frame_mean']:.1f} ms/frame ({summary['fps_tracking']:.1f} fps)")
    from needletrack.track.overlay import playback_fps

    print(f"  overlay: {out / 'overlay.mp4'} (plays at {playback_fps(summary.get('fps')):g} fps)   "
          f"plot: {out / 'plot.png'}   masks: {out / 'masks'}   sample: {seq_dir}   "
          f"({time.perf_counter() - t_start:.1f} s)")
    return 0
