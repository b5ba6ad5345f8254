"""The ``lightnets`` command: parses arguments and calls the library; holds no logic of its own.

One module per task, each parser beside its commands (``classify``, ``deploy``, ``detect``, ``search``,
``models``); the options every training command shares, generated from the recipe dataclasses, are in ``options``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._version import __version__
from ..errors import LightnetsError
from . import classify, deploy, detect, models, search


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightnets", description="Efficient vision networks: build, train, "
                                     "measure, shrink to a latency budget and export.")
    parser.add_argument("--version", action="version", version=f"lightnets {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (models, classify, deploy, detect, search):
        module.add_commands(sub)
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
