"""Options shared by the commands: value parsers, and the recipe, speed and run options of every training command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import LightnetsError
from ..train.recipes import Recipe


def human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def checked(kind: Callable[[str], Any], ok: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse type that parses with ``kind`` and refuses a value failing ``ok`` on parse, in one line
    (``argument --threads: must be a positive integer, got '0'``), before a bad value can be silently replaced,
    clamped or turned into a traceback later."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    parse.__name__ = what
    return parse


positive_int = checked(int, lambda v: v > 0, "a positive integer")
non_negative_int = checked(int, lambda v: v >= 0, "an integer >= 0")
positive_float = checked(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
non_negative_float = checked(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
finite_float = checked(float, math.isfinite, "a finite number")
fraction = checked(float, lambda v: 0 < v < 1, "a number between 0 and 1 (exclusive)")


def device_name(text: str) -> str:
    """An argparse type for ``--device``: a device torch knows that this machine has (``cuda`` without CUDA is
    refused on parse, not by an AssertionError at the first tensor moved)."""
    from ..train.checkpoint import usable_device

    try:
        usable_device(text)
    except LightnetsError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


# What a recipe field's option accepts beyond its type; what needs several fields (warmup < epochs) is judged by
# ``Recipe.check``. A float field not named here takes any finite number.
RECIPE_TYPES: dict[str, Callable[[str], Any]] = {
    "epochs": positive_int, "batch_size": positive_int, "lr": positive_float, "momentum": non_negative_float,
    "wd": non_negative_float, "warmup": non_negative_float, "label_smoothing": non_negative_float,
    "ema": non_negative_float, "grad_clip": positive_float, "crop_pad": non_negative_int,
    "cutout": non_negative_int, "budget_min": positive_float, "freeze": non_negative_int,
}


def csv_of(kind: Callable[[str], Any], what: str):
    """An argparse type for comma-separated values, e.g. ``--batch-sizes 1,32``."""

    def parse(text: str) -> list:
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None

    return parse


def pair_of(kind: type, what: str):
    """An argparse type for two comma-separated values, e.g. ``--scale 0.75,1.33``."""

    def parse(text: str) -> tuple:
        values = csv_of(kind, what)(text)
        if len(values) != 2:
            raise argparse.ArgumentTypeError(f"expected two comma-separated {what}, got {text!r}")
        return tuple(values)

    return parse


def _optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type that also takes ``none`` (an optional field set to None)."""

    def parse(text: str) -> Any:
        return "none" if text.lower() == "none" else kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def add_dataclass_options(p: argparse.ArgumentParser, cls: type, *, exclude: Sequence[str] = (), prefix: str = "",
                          default_help: str = "overrides the recipe", aliases: dict[str, str] | None = None,
                          defaults: object | None = None, types: dict[str, Callable[[str], Any]] | None = None
                          ) -> None:
    """One option per field of the dataclass ``cls`` (``batch_size`` -> ``--batch-size``), its type, choices and
    help read from the field: a field added to the dataclass becomes an option of every command that uses it.
    Every option defaults to None, so what is not given falls through to the dataclass's own value; ``prefix``
    names the options and their destinations apart (``--short-lr`` -> ``short_lr``); ``{default}`` in a help text
    is the field's value in ``defaults`` (an instance of ``cls``; default: ``cls()``); ``types`` parses and checks a
    field's value (see ``checked``; a float field not in it takes any finite number)."""
    hints = typing.get_type_hints(cls)
    instance = defaults if defaults is not None else cls()
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        hint, dest = hints[f.name], prefix.replace("-", "_") + f.name
        flags = [f"--{prefix}{f.name.replace('_', '-')}"] + ([aliases[f.name]] if f.name in (aliases or {}) else [])
        help_text = f.metadata.get("help", default_help)
        if "{default}" in help_text:
            help_text = help_text.format(default=getattr(instance, f.name))
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if optional or bool in args else hint
        if "choices" in f.metadata:
            choices = ["none" if c is None else c for c in f.metadata["choices"]]
            p.add_argument(*flags, dest=dest, choices=choices, default=None, help=help_text)
        elif base is bool:  # bool, or bool | str for a field that may also be "auto"
            p.add_argument(*flags, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(base) is tuple:
            p.add_argument(*flags, dest=dest, type=_optional(pair_of(typing.get_args(base)[0], "numbers")),
                           default=None, help=help_text, metavar="LOW,HIGH")
        else:
            kind = (types or {}).get(f.name, finite_float if base is float else base)
            p.add_argument(*flags, dest=dest, type=_optional(kind) if optional else kind, default=None,
                           help=help_text)


def dataclass_values(args: argparse.Namespace, cls: type, *, exclude: Sequence[str] = (), prefix: str = ""
                     ) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line (see ``add_dataclass_options``), by field name."""
    values = {f.name: getattr(args, prefix.replace("-", "_") + f.name) for f in dataclasses.fields(cls)
              if f.name not in exclude}
    return {k: v for k, v in values.items() if v is not None}


def read_config_file(path: str | None) -> dict[str, Any]:
    """The recipe fields of a ``--config`` file: a json or yaml mapping of fields, or a run's config.json (its
    ``recipe``). Unknown fields are refused later, by ``Recipe.replace``, naming them."""
    if path is None:
        return {}
    file = Path(path)
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise LightnetsError(f"cannot read --config {path}: {err}") from None
    if file.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise LightnetsError(f"--config {path} is yaml: pip install pyyaml, or give a .json file") from None
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise LightnetsError(f"--config {path} is not valid yaml: {str(err).splitlines()[0]}") from None
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise LightnetsError(f"--config {path} is not valid json: {err}") from None
    if not isinstance(values, dict):
        raise LightnetsError(f"--config {path} must hold a mapping of recipe fields, got {type(values).__name__}")
    if isinstance(values.get("recipe"), dict):  # a run folder's config.json
        values = values["recipe"]
    if isinstance(values.get("rrc_scale"), list):
        values["rrc_scale"] = tuple(values["rrc_scale"])
    return values


def recipe_overrides(args: argparse.Namespace, exclude: Sequence[str] = ()) -> dict:
    """The recipe fields of ``--config`` overridden by those given as options (the rest: the recipe's own), and
    ``--threads``."""
    overrides = read_config_file(args.config) | dataclass_values(args, Recipe, exclude=exclude)
    if getattr(args, "no_augment", False):
        overrides |= {"crop_pad": 0, "flip": False}
    return overrides | {"threads": args.threads}


def training_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments ``train`` (and ``distill``) take from the options of ``add_training_options``."""
    return dict(out=args.out, exist_ok=args.exist_ok, resume=args.resume, image_size=args.image_size,
                val_split=args.val_split, train_subset=args.train_subset, strict=args.strict, device=args.device,
                progress=not args.quiet, pretrained=args.pretrained, **recipe_overrides(args))


def add_recipe_options(p: argparse.ArgumentParser,
                       recipe_help: str | None = "fast (default), finetune, source, source_wd",
                       exclude: Sequence[str] = ()) -> None:
    """``--config``, the named recipe (``recipe_help`` None: no choice of recipe) and one option per recipe field,
    for every training command."""
    p.add_argument("--config", default=None, metavar="FILE", help="recipe fields from a .json or .yaml file, or a "
                   "run's config.json; options given here override them")
    if recipe_help is not None:
        p.add_argument("--recipe", default=None, help=f"named recipe: {recipe_help}")
    add_dataclass_options(p, Recipe, exclude=exclude, types=RECIPE_TYPES)
    if not {"crop_pad", "flip"} & set(exclude):
        p.add_argument("--no-augment", action="store_true", help="no crop and flip (the source's no-augmentation "
                       "rows)")


def add_run_options(p: argparse.ArgumentParser, kind: str) -> None:
    """Where and how a training command runs."""
    p.add_argument("--strict", action="store_true", help="stop at the first undecodable image instead of skipping")
    p.add_argument("--out", default=None, help=f"run folder (default runs/{kind}/MODEL[-N])")
    p.add_argument("--exist-ok", action="store_true", help="overwrite an existing run folder")
    p.add_argument("--device", type=device_name, default=None, help="cpu, cuda, cuda:1, mps (default: the best "
                   "available)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: the fastest measured "
                   "here)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_pretrained_option(p: argparse.ArgumentParser, what: str = "the model") -> None:
    p.add_argument("--pretrained", nargs="?", const=True, default=None, metavar="TAG|PATH",
                   help=f"start {what} from weights: alone, the default published ones; or a tag of `lightnets "
                   "models --pretrained`, a run folder or a weights file (use --recipe finetune)")


def add_training_options(p: argparse.ArgumentParser, kind: str) -> None:
    """The options of `lightnets train` besides the model, shared with `lightnets distill`."""
    p.add_argument("--data", default=None, help="image folder, .tar/.tar.gz, CIFAR-10 python archive, "
                   "'sample' (built in) or 'cifar10' (official release, downloaded once)")
    add_recipe_options(p)
    p.add_argument("--image-size", type=positive_int, default=None, help="decode size (default: the model's input "
                   "size)")
    p.add_argument("--val-split", type=fraction, default=None, help="hold out this fraction of train/ (seeded)")
    p.add_argument("--train-subset", type=positive_int, default=None, metavar="N",
                   help="train on N images of the training split, class-balanced (seeded by --seed)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a stopped run exactly")
    add_pretrained_option(p)
    add_run_options(p, kind)
