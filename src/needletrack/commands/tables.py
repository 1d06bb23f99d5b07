"""`needletrack tables`: reproduce the paper's Tables 1-4 (train or load each row, track a test set, write
Markdown + PNG + a Figure-7-like panel)."""
from __future__ import annotations

HELP = "reproduce the paper's tables 1-4 (train/load each row, evaluate by tracking, write Markdown and PNGs)"


def add_arguments(p) -> None:
    p.add_argument("--table", required=True, action="append", metavar="N",
                   help="1 (encoder depths), 2 (flow window), 3 (module ablation), 4 (methods); "
                        "repeat or use 'all' for several; rows shared between tables are trained once")
    p.add_argument("--scale", default="quick", choices=("quick", "full", "micro"),
                   help="quick: 128 px and a few hundred steps per row, fits a 2-core CPU (default); "
                        "full: the paper's 448 px setting, for a GPU; micro: a seconds-long smoke test")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: tableN.md/.png/.json, figure7_tableN.png; trained runs and results "
                        "are cached here and reused")
    p.add_argument("--config", metavar="YAML", help="a tables config instead of configs/tables/<scale>.yaml")
    p.add_argument("--steps", type=int, metavar="N",
                   help="training steps per row instead of the scale's (one budget for every row; stated in "
                        "each table's heading)")
    p.add_argument("--publish", metavar="DIR",
                   help="also copy each table as DIR/table{N}_{scale}.md/.png and figure7_table{N}_{scale}.png "
                        "(e.g. docs)")
    p.add_argument("--paper", metavar="YAML", help="the paper's figures (default configs/tables/paper.yaml)")


def _tables(values: list[str]) -> list[int]:
    from needletrack.errors import NeedletrackError

    out: list[int] = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip().lower()
            if part == "all":
                out += [1, 2, 3, 4]
                continue
            if part not in ("1", "2", "3", "4"):
                raise NeedletrackError(f"--table must be 1, 2, 3, 4 or all, got {part!r}")
            out.append(int(part))
    return list(dict.fromkeys(out))


def run(args) -> int:
    from needletrack.eval.tables import run_table

    for t in _tables(args.table):
        run_table(t, args.scale, args.out, config=args.config, paper=args.paper, publish=args.publish,
                  steps=args.steps)
    return 0
