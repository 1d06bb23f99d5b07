"""Engines compared: accuracy (IoU on a simulated test set) and speed (whole tracker step) under torch,
onnxruntime fp32 and onnxruntime int8, plus the memory-read variants and our STCN preset for the ratio.

    python benchmarks/bench_engines.py                                  # the shipped model, everything
    python benchmarks/bench_engines.py --model stnan_fast --sequences 4 --frames 30 --speed-frames 150
    python benchmarks/bench_engines.py --skip-speed --json engines_acc.json

Accuracy: the first ``--sequences`` sequences of the harness's frozen ``test/clinical`` set
(``needletrack.data.splits``; the int8 calibration uses simulator seeds from 9000 on) of ``--frames`` frames at
``--frame-size`` px, tracked from the first frame with a visible needle (its ground-truth mask is the prompt
and is not scored) by ``Tracker`` with each engine; pooled IoU / Dice / per-frame IoU
(``needletrack.eval.metrics``), plus the largest per-pixel probability difference from the torch engine.
The int8 verdict: int8 may become the default only if its IoU is within 0.01 of fp32's.

Speed: ``needletrack.eval.benchmark.benchmark`` for each engine (own process each; the comparator
``stcn_fast`` at the same input size with the same engine).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def simulated_test_set(sequences: int, frames: int, size: int):
    """The harness's frozen ``test/clinical`` set (needletrack.data.splits), from the first visible needle."""
    from needletrack.data import splits

    return [(seq.name, list(zip(seq.frames, seq.masks)))
            for seq in splits.iter_set("test/clinical", sequences, frames, size=size)]


def accuracy(engine, test_set, ref_probs=None) -> tuple[dict, list]:
    from needletrack.eval.metrics import MetricAccumulator
    from needletrack.track import Tracker

    overall = MetricAccumulator()
    probs, max_diff = [], 0.0
    t0 = time.perf_counter()
    for si, (name, seq) in enumerate(test_set):
        tr = Tracker(engine)
        acc = MetricAccumulator()
        for fi, (f, m) in enumerate(seq):
            if fi == 0:
                tr.step(f, mask=m)
                acc.update(m, m, first=True)
                continue
            r = tr.step(f)
            acc.update(r.mask, m)
            probs.append(r.prob)
            if ref_probs is not None:
                max_diff = max(max_diff, float(np.abs(ref_probs[len(probs) - 1] - r.prob).max()))
        overall.merge(acc)
    res = overall.result()
    out = {k: res.get(k) for k in ("iou", "dice", "precision", "recall", "per_frame_iou", "empty_frame_accuracy",
                                   "frames")}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if ref_probs is not None:
        out["max_prob_diff_vs_torch"] = max_diff
    return out, probs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--sequences", type=int, default=6)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--frame-size", type=int, default=448)
    ap.add_argument("--speed-frames", type=int, default=300)
    ap.add_argument("--engines", default="torch,onnx,int8")
    ap.add_argument("--compare", default="stcn_fast")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from needletrack.eval.benchmark import benchmark, format_row, load_any, machine, time_read_variants
    from needletrack.track.onnx_engine import OnnxEngine, default_threads

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    threads = args.threads or default_threads()
    result = {"model": args.model, "machine": machine(), "threads": threads}
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if not args.skip_accuracy:
        import torch

        torch.set_num_threads(threads)
        from needletrack.track.engine import TorchEngine

        model, label, trained = load_any(args.model, log)
        result["model"] = label
        result["trained"] = trained
        test_set = simulated_test_set(args.sequences, args.frames, args.frame_size)
        result["test_set"] = {"set": "test/clinical (needletrack.data.splits)", "sequences": len(test_set),
                              "frames": args.frames, "frame_size": args.frame_size}
        src = args.model if trained else model
        acc, ref = {}, None
        for e in engines:
            eng = TorchEngine(model) if e == "torch" else OnnxEngine(src, precision="int8" if e == "int8" else "fp32",
                                                                   threads=threads, log=log)
            acc[e], probs = accuracy(eng, test_set, None if e == "torch" else ref)
            if e == "torch":
                ref = probs
            log(f"accuracy {e:>6}: IoU {acc[e]['iou']:.4f}, Dice {acc[e]['dice']:.4f}, per-frame IoU "
                f"{acc[e]['per_frame_iou'] if acc[e]['per_frame_iou'] is None else round(acc[e]['per_frame_iou'], 4)}"
                + (f", max |prob - torch| {acc[e]['max_prob_diff_vs_torch']:.1e}" if "max_prob_diff_vs_torch" in acc[e]
                   else ""))
        result["accuracy"] = acc
        if "int8" in acc and "onnx" in acc:
            loss = acc["onnx"]["iou"] - acc["int8"]["iou"]
            result["int8_iou_loss"] = loss
            result["int8_verdict"] = ("int8 could be the default (loses < 0.01 IoU)" if loss < 0.01 else
                                      "fp32 stays the default (int8 loses >= 0.01 IoU)")
            if not trained:
                result["int8_verdict"] += " [untrained weights: not a real verdict]"
            log(result["int8_verdict"] + f": {loss:+.4f}")
        cfg = model.cfg
        memory_slots = cfg.mem_frames       # the model config's default memory size
        result["read_variants"] = time_read_variants(cfg.key_dim, cfg.value_dim, cfg.input_size, memory_slots,
                                                     cfg.top_k or 20, threads=threads)
        log(f"memory read: {result['read_variants']}")
        del model
    if not args.skip_speed:
        speed = {}
        for e in engines:
            speed[e] = benchmark(args.model, engine=e, frames=args.speed_frames, compare=args.compare,
                                 threads=args.threads, log=log)
        result["speed"] = speed
        print("\n| engine | model fps | p50 ms | p95 ms | p99 ms | peak RSS MB | STCN fps | speed ratio |")
        print("|---|---|---|---|---|---|---|---|")
        for e, s in speed.items():
            m, c = s["model"], s.get("comparator")
            print(f"| {m['engine']} | {m['fps']:.1f} | {m['ms_p50']:.1f} | {m['ms_p95']:.1f} | {m['ms_p99']:.1f} | "
                  f"{m['peak_rss_mb']:.0f} | " + (f"{c['fps']:.1f} | ×{s['speedup_vs_comparator']:.2f} |" if c else
                                                 "– | – |"))
        for s in speed.values():
            print(format_row(s["model"]))
    if "accuracy" in result:
        print("\n| engine | IoU | Dice | per-frame IoU | max abs prob diff vs torch |")
        print("|---|---|---|---|---|")
        for e, a in result["accuracy"].items():
            pf = a["per_frame_iou"]
            print(f"| {e} | {a['iou']:.4f} | {a['dice']:.4f} | {'–' if pf is None else f'{pf:.4f}'} | "
                  f"{a.get('max_prob_diff_vs_torch', 0.0):.1e} |")
    if args.json:
        from needletrack.utils import write_json_atomic

        write_json_atomic(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
