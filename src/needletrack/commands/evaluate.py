"""`needletrack evaluate PRED_DIR GT_ROOT [--json OUT]`: the metrics of docs/design.md §5 per sequence and overall."""
from __future__ import annotations

import json

HELP = "score predicted masks against a data set folder (IoU, Dice, P/R/F1, tip and angle error)"


def add_arguments(p):
    p.add_argument("pred_dir", metavar="PRED_DIR",
                   help="predicted masks: PRED_DIR/<seq>/masks/00000.png or PRED_DIR/<seq>/00000.png "
                        "(flat PRED_DIR when GT_ROOT is one sequence)")
    p.add_argument("gt_root", metavar="GT_ROOT", help="data set root (ROOT/<seq>/frames, masks) or one sequence")
    p.add_argument("--json", metavar="OUT", help="write the full result as JSON to OUT")
    p.add_argument("--quiet", action="store_true", help="do not print the table")


def run(args) -> int:
    from needletrack.eval.metrics import evaluate_dirs, format_table
    from needletrack.utils import write_json_atomic

    if args.json and args.json != "-":
        from needletrack.utils import check_out_file

        check_out_file(args.json, "--json")
    result = evaluate_dirs(args.pred_dir, args.gt_root)
    if args.json:
        if args.json == "-":
            print(json.dumps(result, indent=2))
        else:
            write_json_atomic(args.json, result)
    if not args.quiet and args.json != "-":
        print(format_table(result))
    return 0
