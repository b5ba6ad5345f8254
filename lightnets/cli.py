"""The ``lightnets`` command: parses arguments and calls the library; holds no logic of its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .errors import LightnetsError
from .report import format_table


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def cmd_models(args: argparse.Namespace) -> int:
    from .report import models_table

    rows = models_table(args.pattern)
    if not rows:
        raise LightnetsError(f"no model matches {args.pattern!r}; run `lightnets models` for the list")
    print(format_table(rows))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .report import model_report

    print(model_report(args.model, args.input_size))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightnets", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lightnets {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the registered models with params, MACs and the papers' figures")
    p.add_argument("pattern", nargs="?", default=None, help="shell wildcard or substring, e.g. 'mobilenetv3*'")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("info", help="a model's stages (channels, stride), params and MACs per stage")
    p.add_argument("model")
    p.add_argument("--input-size", type=int, default=None, help="input height and width (default: the model's)")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (LightnetsError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
        if args.debug:
            raise
        print(f"lightnets: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lightnets: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
