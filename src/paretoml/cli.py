"""`paretoml` command line: thin argparse subcommands (parse → config → library call → print).

Errors are one line on stderr with exit 1 (usage errors exit 2, argparse's convention);
``-v`` shows the traceback. Each subcommand module exposes ``add_parser(subparsers)`` that
registers its parser and sets ``func``; the list below is the one explicit registry.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import paretoml

# name of the module holding a subcommand's add_parser(); modules must import cheaply.
_SUBCOMMAND_MODULES = [
    "paretoml.cli_frontier",
    "paretoml.retrieval._cli",
    "paretoml.filetype.cli",
    "paretoml.cli_text",
]


def _build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="paretoml",
        description="Efficient deep learning, measured: variants, peers and their Pareto front.",
    )
    ap.add_argument("--version", action="version", version=f"paretoml {paretoml.__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``paretoml`` console script; returns the exit code."""
    ap = _build_parser()
    args = ap.parse_args(argv)  # exits 2 on usage errors
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("paretoml: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `paretoml ... | head`
        return 0
    except Exception as e:  # noqa: BLE001 — the CLI boundary turns any error into one line
        if args.verbose:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"paretoml {args.command}: error: {msg}", file=sys.stderr)
        return 1


def _jsonable(o):
    """Arrays to lists, non-finite floats to null (JSON has no NaN/Infinity: `jq` would reject them)."""
    if hasattr(o, "tolist"):
        o = o.tolist()
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if o is None or isinstance(o, (str, int, bool)):
        return o
    return str(o)


def print_json(obj) -> None:
    """Print `obj` as one strict JSON document on stdout (helper for subcommands' --json).

    Non-finite floats, e.g. the -inf distances that pad a search whose k exceeds the index
    size, are printed as null.
    """
    json.dump(_jsonable(obj), sys.stdout, allow_nan=False)
    sys.stdout.write("\n")


def existing_file(value: str) -> Path:
    """argparse type: a path that must exist (usage error, exit 2, otherwise)."""
    p = Path(value)
    if value != "-" and not p.exists():
        raise argparse.ArgumentTypeError(f"no such file: {value}")
    return p


if __name__ == "__main__":
    sys.exit(main())
