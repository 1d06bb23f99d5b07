"""`needletrack validate ROOT`: say exactly what is wrong with a data set folder."""
from __future__ import annotations

import json

HELP = "check a data set folder (ROOT/<seq>/frames, masks, meta.json) and list every problem by file"


def add_arguments(p):
    p.add_argument("root", metavar="ROOT", help="data set root (ROOT/<seq>/frames/00000.png ...) or one sequence")
    p.add_argument("--json", action="store_true", help="print the problems as JSON")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.add_argument("--max-lines", type=int, default=200, help="print at most this many problems (default 200)")


def run(args) -> int:
    from pathlib import Path

    from needletrack.data.validate import validate_dataset
    from needletrack.errors import InputError

    problems = validate_dataset(args.root)
    errors = [p for p in problems if p.level == "error" or args.strict]
    warnings = [p for p in problems if p.level != "error" and not args.strict]
    if args.json:
        print(json.dumps({"root": str(args.root), "ok": not errors,
                          "problems": [p.to_dict() for p in problems]}, indent=2))
    else:
        for p in problems[: args.max_lines]:
            # --strict counts warnings as errors, and says so
            print(f"error: {p.path}: {p.message}" if args.strict and p.level != "error" else p)
        if len(problems) > args.max_lines:
            print(f"... and {len(problems) - args.max_lines} more")
    if errors:
        raise InputError(f"{len(errors)} error(s), {len(warnings)} warning(s); the folder is not a valid "
                         "data set", Path(args.root))
    if not args.json:
        from needletrack.data.folder import list_sequences, read_sequence

        seqs = list_sequences(args.root)
        n = sum(len(read_sequence(s)) for s in seqs)
        print(f"{args.root}: OK ({len(seqs)} sequence(s), {n} frames, {len(warnings)} warning(s))")
    return 0
