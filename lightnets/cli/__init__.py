"""The ``lightnets`` command: parses arguments and calls the library; holds no logic of its own.

One module per task, each parser beside its commands (``classify``, ``deploy``, ``detect``, ``segment``, ``pose``,
``search``, ``models``); the options every training command shares, generated from the recipe dataclasses, are in
``options``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from safetensors import SafetensorError

from .._version import __version__
from ..errors import LightnetsError, os_error_text
from . import classify, deploy, detect, lift, models, pose, search, segment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightnets", description="Efficient vision networks: build, train, "
                                     "measure, shrink to a latency budget and export.")
    parser.add_argument("--version", action="version", version=f"lightnets {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (models, classify, deploy, detect, segment, pose, search, lift):
        module.add_commands(sub)
    return parser


def _one_line(err: Exception) -> str:
    """The message of an error ``main`` reports: a ``LightnetsError``'s own; another's on one line, saying what kind
    of file was bad where the error itself does not."""
    if isinstance(err, LightnetsError):
        return str(err)
    if isinstance(err, OSError):
        text = os_error_text(err)
    elif isinstance(err, SafetensorError):
        text = f"a .safetensors file is damaged or could not be written: {err}"
    elif isinstance(err, UnicodeDecodeError):
        text = f"a file that should be UTF-8 text is not ({err.reason} at byte {err.start})"
    else:
        text = f"a file that should be JSON is not: {err}"
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    # The library raises LightnetsError, naming the file, where it reads or writes one; the rest is the last resort
    # for user- and OS-caused failures met elsewhere. Never a bare Exception: a programming error stays a traceback.
    except (LightnetsError, OSError, SafetensorError, UnicodeDecodeError, json.JSONDecodeError) as err:
        if args.debug:
            raise
        print(f"lightnets: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lightnets: interrupted", file=sys.stderr)
        return 130
