"""The `needletrack` command: one entry point, one module per subcommand in needletrack.commands."""
from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import sys

# subcommand name -> module under needletrack.commands (each defines HELP, add_arguments, run)
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "info": "info",
    "validate": "validate",
    "evaluate": "evaluate",
    "simulate": "simulate",
    "models": "models",
    "track": "track",
    "train": "train",
    "benchmark": "benchmark",
    "export-onnx": "export_onnx",
    "serve-igtl": "serve_igtl",
    "serve-web": "serve_web",
    "tables": "tables",
}


def _load(module: str):
    try:
        return importlib.import_module(f"needletrack.commands.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"needletrack.commands.{module}":
            return None
        raise


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2), like every other bad input."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from needletrack import __version__

    parser = _Parser(
        prog="needletrack",
        description="Find and follow a biopsy needle in 2D ultrasound video (STNAN memory network).",
    )
    parser.add_argument("--version", action="version", version=f"needletrack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in COMMANDS.items():
        mod = _load(module)
        if mod is None:
            continue
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


@contextlib.contextmanager
def _warnings_as_lines(command: str):
    """While a command runs: needletrack's own warnings (NeedletrackWarning) are one ``warning:`` line each
    on stderr; other libraries' warnings (numpy, PIL, pydicom, torch) are not shown unless NEEDLETRACK_DEBUG
    is set, so a bad input gives its one-line error and nothing before it."""
    import warnings

    from needletrack.errors import NeedletrackWarning

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"needletrack {command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        if not os.environ.get("NEEDLETRACK_DEBUG"):
            warnings.simplefilter("ignore")
        warnings.simplefilter("always", NeedletrackWarning)
        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    from needletrack.errors import NeedletrackError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        print("needletrack: error: a command is required (see needletrack --help)", file=sys.stderr)
        return 2
    try:
        with _warnings_as_lines(args.command):
            rc = args._run(args)
    except NeedletrackError as e:
        print(f"needletrack {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"needletrack {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as e:   # the file system refused (disk full, read-only, permissions): the user's to fix
        if os.environ.get("NEEDLETRACK_DEBUG"):
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        what = e.strerror or str(e) or type(e).__name__
        hint = " (earlier outputs were left as they were)" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        print(f"needletrack {args.command}: error: {where}{what}{hint}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - last line of defence: one line, unless debugging
        if os.environ.get("NEEDLETRACK_DEBUG"):
            raise
        print(f"needletrack {args.command}: internal error: {type(e).__name__}: {e} "
              "(set NEEDLETRACK_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
