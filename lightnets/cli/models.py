"""`lightnets models` and `lightnets info`: the registry and one model's stages."""

from __future__ import annotations

import argparse

from ..errors import LightnetsError
from ..report import format_table
from .options import positive_int


def weights_table(pattern: str | None) -> list[dict[str, str]]:
    """One row per published weight file that loads into a model matching ``pattern``."""
    from ..models import list_models
    from ..weights import weight_specs

    names = set(list_models(pattern))
    rows = []
    for spec in weight_specs():
        if spec.model in names:
            top1 = "-" if spec.top1 is None else f"{spec.top1:.2f}"
            rows.append({"model": spec.model, "tag": spec.tag, "default": "yes" if weight_specs(spec.model)[0] is spec
                         else "", "input": str(spec.input_size), "crop": f"{spec.crop_pct:g}",
                         "interp.": spec.interpolation, "peer top-1 %": top1, "published as": spec.peer,
                         "licence": spec.licence})
    return rows


def cmd_models(args: argparse.Namespace) -> int:
    from ..report import models_table

    rows = weights_table(args.pattern) if args.pretrained else models_table(args.pattern)
    if not rows:
        raise LightnetsError(f"no model matches {args.pattern!r}; run `lightnets models` for the list")
    print(format_table(rows))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..report import model_report

    print(model_report(args.model, args.input_size))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models with params, MACs and the papers' figures")
    p.add_argument("pattern", nargs="?", default=None, help="shell wildcard or substring, e.g. 'mobilenetv3*'")
    p.add_argument("--pretrained", action="store_true", help="list the published weights instead: each model's tags "
                   "(the default first), pre-processing, the peer's top-1 and licence")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("info", help="a model's stages (channels, stride), params and MACs per stage")
    p.add_argument("model")
    p.add_argument("--input-size", type=positive_int, default=None, help="input height and width (default: the "
                   "model's)")
    p.set_defaults(func=cmd_info)
