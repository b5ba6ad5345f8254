"""``create_model(name, pretrained=...)``: a model with published or the user's own weights, and the
pre-processing those weights expect (``data_config``).

A published file is renamed into our keys (``weights.keymaps``) and checked whole before anything is loaded, so
a file that does not fit is one line naming the first key that fails, and the model is never half-loaded. With
``num_classes`` other than the weights', everything but the classifier is loaded and the classifier starts
fresh, as timm does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import LightnetsError
from ..models import create_model as build_model
from ..models import model_info
from .catalog import IMAGENET_MEAN, IMAGENET_STD, WEIGHTS, WeightSpec
from .hub import fetch, read_weights
from .keymaps import to_lightnets

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".json")


@dataclass(frozen=True)
class DataConfig:
    """How images must be prepared for a model: shorter side resized to ``input_size / crop_pct`` with
    ``interpolation``, centre crop of ``input_size``, scaled to 0..1 and standardised with ``mean`` and ``std``."""

    input_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of_spec(cls, spec: WeightSpec) -> DataConfig:
        return cls(spec.input_size, spec.crop_pct, spec.interpolation, tuple(spec.mean), tuple(spec.std))

    @classmethod
    def of_meta(cls, meta: Mapping[str, Any]) -> DataConfig:
        """A checkpoint's (or an export's) record; older ones, without crop and interpolation, took the whole
        image, resized bilinearly."""
        return cls(int(meta["image_size"]), float(meta.get("crop_pct", 1.0)), meta.get("interpolation", "bilinear"),
                   tuple(meta["mean"]), tuple(meta["std"]))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def weight_specs(model: str | None = None) -> list[WeightSpec]:
    """The published weights of ``model`` (all models' when None), its default first."""
    if model is not None:
        model_info(model)  # an unknown name is its own error
    return [w for w in WEIGHTS if model is None or w.model == model]


def find_weights(model: str, tag: bool | str = True) -> WeightSpec:
    """The weights ``tag`` of ``model`` (``True``: its default); an unknown tag lists the known ones."""
    specs = weight_specs(model)
    if not specs:
        raise LightnetsError(f"no published weights load into {model!r}; models with weights: "
                             f"{', '.join(sorted({w.model for w in WEIGHTS}))}")
    if tag is True:
        return specs[0]
    tag = str(tag).removeprefix(f"{model}.")
    for spec in specs:
        if spec.tag == tag:
            return spec
    raise LightnetsError(f"{model} has no weights tagged {tag!r}; its tags: {', '.join(s.tag for s in specs)}")


def is_weight_path(pretrained: object) -> bool:
    """Whether ``pretrained`` names a file or run folder of the user's rather than a published tag."""
    if not isinstance(pretrained, (str, Path)) or isinstance(pretrained, bool):
        return False
    path = Path(pretrained)
    return isinstance(pretrained, Path) or path.suffix in WEIGHT_SUFFIXES or "/" in str(pretrained) or path.exists()


@cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names in the published order (each synset's first WordNet lemma)."""
    lines = files("lightnets").joinpath("assets/imagenet-1k.tsv").read_text().splitlines()
    return tuple(line.split("\t", 1)[1].split(",")[0].strip() for line in lines)


def check_fits(weights: dict[str, torch.Tensor], model: nn.Module, source: str) -> None:
    """One line naming the first key of ``weights`` that ``model`` lacks, lacks in ``weights``, or shapes
    differently; nothing is loaded before this passes."""
    own = model.state_dict()
    for key, value in weights.items():
        if key not in own:
            raise LightnetsError(f"the weights in {source} do not fit {type(model).__name__}: it has no {key}")
        if tuple(value.shape) != tuple(own[key].shape):
            raise LightnetsError(f"the weights in {source} do not fit {type(model).__name__}: {key} is "
                                 f"{tuple(value.shape)} there and {tuple(own[key].shape)} here")
    missing = next((k for k in own if k not in weights), None)
    if missing is not None:
        raise LightnetsError(f"the weights in {source} do not fit {type(model).__name__}: they lack {missing}")


def _without_classifier(weights: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``weights`` less the classifier's, replaced by ``model``'s own freshly initialised ones."""
    fc = {f"head.fc.{k}": v for k, v in model.head.fc.state_dict().items()}
    return {**{k: v for k, v in weights.items() if not k.startswith("head.fc.")}, **fc}


def _load(model: nn.Module, weights: dict[str, torch.Tensor], source: str, num_classes: int | None) -> nn.Module:
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
        weights = _without_classifier(weights, model)
    check_fits(weights, model, source)
    from ..train.checkpoint import first_non_finite  # imported here for the reason given in _own

    bad = first_non_finite(weights.items())
    if bad is not None:
        raise LightnetsError(f"the weights in {source} are corrupt: {bad} holds NaN or infinite values")
    with torch.no_grad():
        model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in weights.items()})
    return model


def _published(name: str, spec: WeightSpec, num_classes: int | None, in_chans: int,
               overrides: dict[str, Any]) -> nn.Module:
    if in_chans != 3:
        raise LightnetsError(f"weights {spec.name} take 3-channel images; in_chans={in_chans} would need a new stem")
    model_args = {**spec.model_args, **overrides}
    model = build_model(name, num_classes=spec.num_classes, **model_args)
    path = fetch(spec)
    weights = to_lightnets(spec.key_map, read_weights(path), model)
    _load(model, weights, f"{path} ({spec.name})", num_classes)
    config = DataConfig.of_spec(spec)
    model.data_config, model.pretrained, model.model_args = config, spec.name, model_args
    if model.num_classes == spec.num_classes and spec.label_set == "imagenet-1k":
        model.checkpoint_meta = {"model": name, "model_args": model_args,
                                 "num_classes": spec.num_classes, "classes": list(imagenet_classes()),
                                 "image_size": spec.input_size, **config.to_dict(), "pretrained": spec.name}
    return model


def _own(name: str, path: Path, num_classes: int | None, in_chans: int, overrides: dict[str, Any]) -> nn.Module:
    """A lightnets checkpoint (run folder, or its .safetensors with the .json beside it), or a bare file in our
    keys; the checkpoint's model arguments and normalisation come with it. ``lightnets.train.checkpoint`` is
    imported here, not at the top: importing it runs the ``lightnets.train`` package, whose trainer imports this
    module."""
    from ..train.checkpoint import checkpoint_paths, load_checkpoint

    try:
        checkpoint_paths(path)
        is_checkpoint = True
    except LightnetsError:
        is_checkpoint = False
    if is_checkpoint:
        weights, meta = load_checkpoint(path)
        if meta["model"] != name:
            raise LightnetsError(f"{path} holds a {meta['model']}, not a {name}")
        model_args = {**(meta.get("model_args") or {}), **overrides}
        model = build_model(name, num_classes=meta["num_classes"], in_chans=in_chans, **model_args)
        _load(model, weights, str(path), num_classes)
        model.data_config = DataConfig.of_meta(meta)
    else:
        if not path.is_file():
            raise LightnetsError(f"weights file {path} does not exist")
        weights = read_weights(path)
        head = weights.get("head.fc.weight")
        model_args = dict(overrides)
        model = build_model(name, num_classes=int(head.shape[0]) if head is not None else num_classes,
                            in_chans=in_chans, **model_args)
        _load(model, weights, str(path), num_classes)
    model.pretrained, model.model_args = str(path), model_args
    return model


def create_model(name: str, num_classes: int | None = None, in_chans: int = 3, pretrained: bool | str | Path = False,
                 **overrides: Any) -> nn.Module:
    """Build a registered model, with weights when ``pretrained`` is given: ``True`` (the model's default
    published weights), a tag (``"ra_in1k"``; ``lightnets models --pretrained`` lists them) or a path (a run
    folder, a lightnets checkpoint, or a .safetensors/.pth file in lightnets' keys). ``overrides`` replace the
    variant's arguments; published weights bring the options they need (``WeightSpec.model_args``)."""
    if pretrained is False or pretrained is None:
        return build_model(name, num_classes=num_classes, in_chans=in_chans, **overrides)
    if is_weight_path(pretrained):
        return _own(name, Path(pretrained), num_classes, in_chans, overrides)
    return _published(name, find_weights(name, pretrained), num_classes, in_chans, overrides)


def data_config(model: nn.Module | str, pretrained: bool | str = False) -> DataConfig:
    """The pre-processing a model's weights expect: that of its published weights (a model built with
    ``pretrained``, or a name with a tag), of its checkpoint, or by default the registry's input size, the whole
    image (crop_pct 1), bilinear, ImageNet's mean and std."""
    if isinstance(model, str):
        if pretrained:
            return DataConfig.of_spec(find_weights(model, pretrained))
        return DataConfig(model_info(model).input_size, 1.0, "bilinear", IMAGENET_MEAN, IMAGENET_STD)
    config = getattr(model, "data_config", None)
    if isinstance(config, DataConfig):
        return config
    meta = getattr(model, "checkpoint_meta", None)
    if meta is not None:
        return DataConfig.of_meta(meta)
    raise LightnetsError(f"{type(model).__name__} carries no data config; give the model's registered name")
