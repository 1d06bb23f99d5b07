"""`needletrack demo`: simulate a built-in sample, track it with the shipped model, print the metrics."""
from __future__ import annotations

HELP = "track a built-in simulated needle insertion with the shipped model; writes an overlay and prints metrics"

DEMO_SEED = 7
DEMO_FRAMES = 60
DEMO_PRESET = "clinical"


def add_arguments(p) -> None:
    p.add_argument("--out", default="needletrack-demo", metavar="DIR",
                   help="output folder (default: ./needletrack-demo): sample/, masks/, needle.csv, overlay.mp4, "
                        "summary.json")
    p.add_argument("--model", default="default", metavar="NAME|PATH",
                   help="model to run (default: the shipped 'default')")
    p.add_argument("--frames", type=int, default=DEMO_FRAMES, metavar="N", help=f"frames (default {DEMO_FRAMES})")
    p.add_argument("--size", type=int, metavar="S", help="frame size (default: the model's input size)")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help=f"simulation seed (default {DEMO_SEED})")
    p.add_argument("--engine", default="torch", choices=("auto", "torch", "onnx"),
                   help="inference engine (default torch: the ONNX engine's first-use export would take longer "
                        "than the demo itself)")
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


def run(args) -> int:
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
    from needletrack.track import Tracker
    from needletrack.track.engine import make_engine
    from needletrack.track.pipeline import track_to_folder

    out = Path(args.out)
    if args.model == "default" and not default_weights_exist():
        print(FALLBACK_WARNING, file=sys.stderr)
        engine = make_engine(build_model("stnan_fast"), engine="torch" if args.engine == "auto" else args.engine)
        label = "stnan_fast (untrained)"
    else:
        engine = make_engine(args.model, engine=args.engine)
        label = str(args.model)
    size = args.size or engine.input_hw[0]

    # 1. the built-in sample: a simulated insertion (fixed seed), written as a data set folder
    seq_dir = out / "sample"
    if (seq_dir / "frames").is_dir():        # a previous demo's sample: replace it whole
        import shutil

        shutil.rmtree(seq_dir)
    sim = simulate_sequence(args.frames, size, DEMO_PRESET, args.seed)
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
          f"seed {args.seed}) tracked with {label} [{summary['engine']}]")
    print(f"  IoU {f(m['iou'])}  Dice {f(m['dice'])}  precision {f(m['precision'])}  recall {f(m['recall'])}  "
          f"per-frame IoU {f(m['per_frame_iou'])}  empty-frame accuracy {f(m['empty_frame_accuracy'])}")
    print(f"  tip error {f(m['tip_error_px'], '{:.1f}')} px ({f(m['tip_error_mm'], '{:.2f}')} mm)  "
          f"angle error {f(m['angle_error_deg'], '{:.1f}')} deg  "
          f"speed {summary['ms_per_frame_mean']:.1f} ms/frame ({summary['fps_tracking']:.1f} fps)")
    print(f"  overlay: {out / 'overlay.mp4'}   masks: {out / 'masks'}   sample: {seq_dir}   "
          f"({time.perf_counter() - t_start:.1f} s)")
    return 0
