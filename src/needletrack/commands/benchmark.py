"""`needletrack benchmark`: frames/s, latency p50/p95/p99 and peak RSS of the whole tracker step."""
from __future__ import annotations

HELP = ("Time the whole streaming step (resize, encoders, memory, decoder, geometry) on a simulated stream: "
        "frames/s, latency p50/p95/p99, peak RSS, and the same for our STCN preset at the same input size.")


def add_arguments(p) -> None:
    p.add_argument("--model", default="default", help="model name or checkpoint (default: the shipped model)")
    p.add_argument("--engine", choices=("torch", "onnx", "int8"), default="onnx",
                   help="torch (eager PyTorch), onnx (onnxruntime fp32, the default) or int8 (onnxruntime QDQ)")
    p.add_argument("--size", type=int, default=None, help="model input size (default: the model's)")
    p.add_argument("--frames", type=int, default=300, help="timed frames (default 300)")
    p.add_argument("--warmup", type=int, default=10, help="untimed first frames (default 10)")
    p.add_argument("--frame-size", type=int, default=448,
                   help="simulated frame size in px, resized to the input size inside the step (default 448)")
    p.add_argument("--compare", default="stcn_fast",
                   help="preset timed the same way at the same input size for the ratio ('none' to skip; "
                        "default stcn_fast: STCN with ResNet50 keys)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the physical cores)")
    p.add_argument("--policy", choices=("segment", "mask"), default="segment",
                   help="tracker output policy: segment (tracker v2, default) or mask (v1), to see what v2 adds")
    p.add_argument("--json", default=None, help="write the results here")


def run(args) -> int:
    import sys

    from needletrack.errors import NeedletrackError
    from needletrack.eval.benchmark import benchmark

    if args.frame_size is not None and args.frame_size < 32:
        raise NeedletrackError(f"--frame-size must be >= 32, got {args.frame_size}")
    if args.threads is not None and args.threads < 1:
        raise NeedletrackError(f"--threads must be >= 1, got {args.threads}")
    if args.warmup < 0:
        raise NeedletrackError(f"--warmup must be >= 0, got {args.warmup}")
    if args.frames < 1:
        raise NeedletrackError(f"--frames must be >= 1, got {args.frames}")
    if args.size is not None and args.size < 32:
        raise NeedletrackError(f"--size must be >= 32, got {args.size}")
    if args.json:
        from needletrack.utils import check_out_file

        check_out_file(args.json, "--json")
    res = benchmark(args.model, engine=args.engine, size=args.size, frames=args.frames,
                    compare=None if str(args.compare).lower() == "none" else args.compare,
                    frame_size=args.frame_size, warmup=args.warmup, threads=args.threads,
                    log=lambda m: print(m, file=sys.stderr), policy=args.policy)
    m = res["model"]
    line = (f"{m['model']} [{m['engine']}] {m['fps']:.1f} frames/s, p50 {m['ms_p50']:.1f} ms, "
            f"p95 {m['ms_p95']:.1f} ms, p99 {m['ms_p99']:.1f} ms, peak RSS {m['peak_rss_mb']:.0f} MB")
    if "comparator" in res:
        c = res["comparator"]
        line += (f"; {c['model']} {c['fps']:.1f} frames/s -> x{res['speedup_vs_comparator']:.2f} "
                 f"at {m['input_size'][0]}px")
    print(line)
    print(f"real time (>= 25 frames/s and p99 <= 40 ms): {'yes' if res['realtime_25fps'] else 'no'} "
          f"(load average {res['machine']['loadavg']} before, {res['machine'].get('loadavg_end')} after)")
    if args.json:
        from needletrack.utils import write_json_atomic

        write_json_atomic(args.json, res)
    return 0
