"""Accuracy against cost for the retraining issue's model candidates: one row (and one point) per candidate,
from a harness report (benchmarks/eval_tracking.py --out R -> R.json) and one `needletrack benchmark --json`
file per candidate (same machine, same settings).

    python scripts/plot_candidates.py --report docs/results/tracking_candidates.json \\
        --candidate "256 px (stage 4)=stage4-256px=docs/results/benchmark_stage4_256.json" \\
        --candidate "320 px (stage 5, shipped)=stage5=docs/results/benchmark_stage5_segment.json" \\
        --out docs/results/candidates

writes OUT.md (the table) and OUT.png (clinical and hard IoU against the median ms per frame, p99 as a bar).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROWS = (("clinical", "iou", "clinical IoU"), ("clinical", "dice", "clinical Dice"),
        ("clinical", "empty_frame_accuracy", "clinical empty-frame acc."), ("hard", "iou", "hard IoU"),
        ("hard", "empty_frame_accuracy", "hard empty-frame acc."))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", required=True, help="a harness report (.json) holding every candidate's run")
    ap.add_argument("--candidate", action="append", required=True, metavar="NAME=RUN_LABEL=BENCH_JSON")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    report = json.loads(Path(args.report).read_text())
    cands = []
    for c in args.candidate:
        try:
            name, label, bench = c.split("=", 2)
            scores = report["runs"][label]["scores"]
            b = json.loads(Path(bench).read_text())["model"]
        except (ValueError, KeyError, OSError) as e:
            print(f"plot_candidates: bad --candidate {c!r}: {e}", file=sys.stderr)
            return 2
        cands.append((name, scores, b))
    head = "| candidate | input | " + " | ".join(r[2] for r in ROWS) + " | frames/s | p50 ms | p99 ms |"
    lines = [f"Harness: `{report['command']}`; speed: `needletrack benchmark --json` files given on the command "
             "line (quiet 2-core machine, ONNX Runtime).", "", head, "|" + "---|" * (len(ROWS) + 5)]
    for name, s, b in cands:
        vals = " | ".join(f"{s[k][m]:.3f}" for k, m, _ in ROWS)
        lines.append(f"| {name} | {b['input_size'][0]} px | {vals} | {b['fps']:.1f} | {b['ms_p50']:.1f} | "
                     f"{b['ms_p99']:.1f} |")
    from needletrack.utils import write_text_atomic

    write_text_atomic(f"{args.out}.md", "\n".join(lines) + "\n")
    from needletrack.io.figures import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for key, marker in (("clinical", "o"), ("hard", "s")):
        xs = [b["ms_p50"] for _, _, b in cands]
        ys = [s[key]["iou"] for _, s, _ in cands]
        ax.plot(xs, ys, marker=marker, label=f"{key} IoU")
        for (name, _, b), y in zip(cands, ys):
            ax.errorbar([b["ms_p50"]], [y], xerr=[[0], [b["ms_p99"] - b["ms_p50"]]], fmt="none", ecolor="0.6")
            ax.annotate(name, (b["ms_p50"], y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axvline(1000 / 30, color="r", lw=0.8, ls="--", label="30 frames/s")
    ax.axvline(40, color="r", lw=0.8, ls=":", label="p99 budget 40 ms")
    ax.set_xlabel("ms per frame (median; bar to p99)")
    ax.set_ylabel("pooled IoU (harness test sets)")
    ax.legend(fontsize=7)
    save_png(fig, f"{args.out}.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
