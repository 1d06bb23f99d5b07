"""Speed of the models' streaming step in eager PyTorch and in onnxruntime (2 intra-op threads).

    python benchmarks/bench_models.py --names stnan_fast,stcn_ct_fast [--torch] [--profile] [--json OUT]
    python benchmarks/bench_models.py --names stnan_fast --set '{"input_size": 224}' --set '{"input_size": 192}'
    python benchmarks/bench_models.py --table torch.json ort.json   # Markdown table from `needletrack models --json`

One step = key encoder with flow against the previous frame + memory read of ``memory_slots`` frames (the
config's ``mem_frames``, 9) with top-k + decoder, plus the value encoder every ``mem_every`` (5) frames, at
batch 1 and the preset's input size. ``--set JSON`` measures variants of each preset (config fields
changed). ``--profile`` prints onnxruntime's time per operator type. Pin the process to 2 cores (``taskset -c 0,1``) for a fair figure.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time


def profile_ops(model, cfg, threads: int, runs: int = 20) -> list[tuple[str, float, int]]:
    import tempfile
    from pathlib import Path

    import onnxruntime as ort

    from needletrack.commands.models import _streaming_inputs, step_module
    from needletrack.track.onnx_engine import session_options
    from needletrack.track.onnx_graphs import export_graph

    img, mask, prev, mk, mv = _streaming_inputs(model, cfg)

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "step.onnx"
        export_graph(step_module(model, cfg.top_k, state=False), (img, prev, mk, mv), p,
                     ["image", "prev", "mem_key", "mem_val"], ["logit"])
        so = session_options(threads)       # the engine's options, with profiling on
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(d) / "prof")
        s = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        feeds = {"image": img, "prev": prev, "mem_key": mk, "mem_val": mv}
        inp = {i.name: feeds[i.name].numpy() for i in s.get_inputs()}
        for _ in range(runs):
            s.run(None, inp)
        ev = json.load(open(s.end_profiling()))
    agg, cnt = collections.Counter(), collections.Counter()
    for e in ev:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"].get("op_name")
            agg[op] += e["dur"]
            cnt[op] += 1
    return [(op, d / runs / 1e3, cnt[op] // runs) for op, d in agg.most_common(12)]


def markdown_table(paths: list[str]) -> str:
    """Merge `needletrack models --json` outputs (torch and onnxruntime runs) into one Markdown table."""
    rows: dict[str, dict] = {}
    for p in paths:
        for r in json.load(open(p)):
            row = rows.setdefault(r["name"], dict(r))
            if r.get("cpu_ms_per_frame") is not None:
                row[f"ms_{r.get('engine', 'torch')}"] = r["cpu_ms_per_frame"]
                row[f"p99_{r.get('engine', 'torch')}"] = r.get("cpu_ms_p99")
    out = ["| preset | encoder depths | flow window | input | params (M) | GFLOPs/frame | eager ms/frame | "
           "ORT ms/frame (p99) |", "|---|---|---|---|---|---|---|---|"]

    def f(v, fmt="{:.1f}"):
        return "–" if v is None else fmt.format(v)

    for name, r in rows.items():
        depths = "ResNet50" if r["encoder_depths"] is None else "(" + ",".join(map(str, r["encoder_depths"])) + ")"
        ort = "–" if r.get("ms_onnxruntime") is None else f"{r['ms_onnxruntime']:.1f} ({r['p99_onnxruntime']:.1f})"
        out.append(f"| `{name}` | {depths} | {r['flow_window'] or '–'} | {r['input_size']} | "
                   f"{r['params'] / 1e6:.2f} | {r['gflops']:.2f} | {f(r.get('ms_torch'))} | {ort} |")
    return "\n".join(out)


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--table":
        print(markdown_table(sys.argv[2:]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", default="stnan_fast,stcn_ct_fast")
    ap.add_argument("--set", action="append", default=[], help="JSON dict of config changes (repeatable)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--torch", action="store_true", help="also time eager PyTorch")
    ap.add_argument("--profile", action="store_true", help="print onnxruntime time per op type")
    ap.add_argument("--json", default=None, help="write the rows to this JSON file")
    args = ap.parse_args(argv)

    import torch

    from needletrack.commands.models import count_gflops, time_onnx, time_torch
    from needletrack.models import build_model, get_config

    torch.set_num_threads(args.threads)
    variants = [json.loads(s) for s in args.set] or [{}]
    rows = []
    for name in args.names.split(","):
        for ch in variants:
            cfg = get_config(name).replace(**ch)
            torch.manual_seed(0)
            model = build_model(cfg).eval()
            row = {"name": name, "changes": ch, "input_size": cfg.input_size,
                   "params": sum(p.numel() for p in model.parameters()),
                   "gflops": round(count_gflops(model, cfg), 3)}
            t = time_onnx(model, cfg, steps=args.steps, threads=args.threads)
            row.update({f"ort_{k}": round(v, 2) for k, v in t.items()})
            if args.torch:
                t = time_torch(model, cfg, steps=max(10, args.steps // 3))
                row.update({f"torch_{k}": round(v, 2) for k, v in t.items()})
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.profile:
                for op, ms, n in profile_ops(model, cfg, args.threads):
                    print(f"    {op:24s} {ms:7.2f} ms  x{n}", flush=True)
    if args.json:
        from needletrack.utils import write_json_atomic

        write_json_atomic(args.json, {"host_cpus": os.cpu_count(), "threads": args.threads, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
