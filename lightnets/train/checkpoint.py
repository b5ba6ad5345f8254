"""Checkpoints as safetensors weights plus JSON, written atomically; nothing is ever unpickled.

A *checkpoint* (``best``, ``last``) is what a user deploys: ``NAME.safetensors`` holds the model's
weights and ``NAME.json`` says how to rebuild and feed it (model name and arguments, class names,
normalisation, recipe, metrics). The *training state* (``state.safetensors``) is what ``--resume``
needs on top: optimizer tensors, raw and EMA weights, with the counters as JSON in its header, so
one rename commits all of it at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .._io import read_safetensors, replace_atomically
from ..errors import LightnetsError, os_error_text

FORMAT = "lightnets-checkpoint"


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_numbers(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# What a key of a checkpoint's json must hold where it is present. Readers need different keys (a classifier
# ``classes``, ``image_size``, ``mean`` and ``std``, a detector ``detector`` and ``input_size``, a segmenter
# ``segmenter``, ``input_hw`` and ``colors``, a pose machine ``pose_machine``, ``joint_names``, ``flip_pairs`` and
# ``input_size``): a key a reader needs but the file lacks is refused as it is read, by ``CheckpointMeta``.
SCHEMA: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model": (lambda v: isinstance(v, str) and v != "", "a model name"),
    "num_classes": (_is_count, "a positive integer"),
    "model_args": (lambda v: isinstance(v, dict), "a mapping of model arguments"),
    "classes": (lambda v: isinstance(v, list) and len(v) > 0 and all(isinstance(c, str) for c in v),
                "a list of class names"),
    "image_size": (_is_count, "a positive integer"),
    "input_size": (_is_count, "a positive integer"),
    "mean": (_is_numbers, "a list of finite numbers"),
    "std": (lambda v: _is_numbers(v) and min(v) > 0, "a list of finite numbers above 0"),
    "recipe": (lambda v: isinstance(v, dict), "a mapping of recipe fields"),
    "metrics": (lambda v: isinstance(v, dict), "a mapping of metrics"),
    "detector": (lambda v: isinstance(v, dict), "a mapping of detector arguments"),
    "lifter": (lambda v: isinstance(v, dict), "a mapping of lifter arguments"),
    "segmenter": (lambda v: isinstance(v, dict), "a mapping of segmenter arguments"),
    "pose_machine": (lambda v: isinstance(v, dict), "a mapping of pose-machine arguments"),
    "joint_names": (lambda v: isinstance(v, list) and len(v) > 0 and all(isinstance(c, str) for c in v),
                    "a list of joint names"),
    "flip_pairs": (lambda v: isinstance(v, list) and all(isinstance(p, list) and len(p) == 2 and
                                                         all(_is_index(i) for i in p) for p in v),
                   "a list of [left, right] joint indices"),
    "input_hw": (lambda v: isinstance(v, list) and len(v) == 2 and all(_is_count(n) for n in v),
                 "[height, width], two positive integers"),
    "colors": (lambda v: isinstance(v, list) and all(isinstance(c, list) and len(c) == 3 and
                                                     all(isinstance(n, int) and 0 <= n <= 255 for n in c) for c in v),
               "a list of [R, G, B] colours, 0 to 255"),
}


class CheckpointMeta(dict):
    """A checkpoint's metadata: a key a reader needs that the file lacks is one ``LightnetsError`` naming the
    file and the key (a plain dict's ``KeyError`` would reach the user as a traceback)."""

    def __init__(self, values: dict[str, Any], path: Path) -> None:
        super().__init__(values)
        self.path = path

    def __missing__(self, key: str) -> Any:
        raise LightnetsError(f"checkpoint {self.path} has no {key!r}: it is incomplete, or not one lightnets wrote")


def check_meta(meta: dict[str, Any], path: Path) -> CheckpointMeta:
    """``meta`` (read from ``path``) held against ``SCHEMA``: the first bad value is one error naming the file,
    the key and what it must hold, before a wrong value can give a traceback or NaN results."""
    for key, (ok, what) in SCHEMA.items():
        if key in meta and not ok(meta[key]):
            raise LightnetsError(f"checkpoint {path}: {key!r} must be {what}, got {json.dumps(meta[key])[:80]}")
    if "classes" in meta and "num_classes" in meta and len(meta["classes"]) != meta["num_classes"]:
        raise LightnetsError(f"checkpoint {path}: {len(meta['classes'])} classes for num_classes "
                             f"{meta['num_classes']}")
    if "mean" in meta and "std" in meta and len(meta["mean"]) != len(meta["std"]):
        raise LightnetsError(f"checkpoint {path}: 'mean' and 'std' must have one value per input channel each")
    return CheckpointMeta(meta, path)


def first_non_finite(named: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating-point tensor holding NaN or infinity, or None: such weights would only show
    as NaN outputs, so they are refused before they are saved or loaded."""
    return next((name for name, v in named if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)


def _plain(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Clone so tied weights do not share storage (safetensors refuses shared tensors).
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def save_checkpoint(stem: Path, weights: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``stem.safetensors`` and ``stem.json`` (weights first, so the json never names missing weights)."""
    stem = Path(stem)
    replace_atomically(stem.with_suffix(".safetensors"), lambda p: save_file(_plain(weights), str(p)))
    text = json.dumps({"format": FORMAT, **meta}, indent=2, default=str)
    replace_atomically(stem.with_suffix(".json"), lambda p: p.write_text(text))


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """The (weights, json) pair for a run folder (its ``best``), a ``.safetensors``/``.json`` path or a stem."""
    path = Path(path)
    if path.is_dir():
        path = path / "best"
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    weights, meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    for p in (weights, meta):
        if not p.is_file():
            raise LightnetsError(f"checkpoint file {p} does not exist; give a run folder, or the .safetensors "
                                 "or .json file of a lightnets checkpoint")
    return weights, meta


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights and metadata of a checkpoint (see ``checkpoint_paths`` for what ``path`` may be); the metadata
    is checked against ``SCHEMA`` and a key it lacks is refused when read (``CheckpointMeta``)."""
    weights, meta_path = checkpoint_paths(path)
    try:
        meta = json.loads(meta_path.read_text())
    except OSError as err:
        raise LightnetsError(f"cannot read {meta_path}: {os_error_text(err)}") from None
    except UnicodeDecodeError as err:
        raise LightnetsError(f"{meta_path} is not a lightnets checkpoint: not UTF-8 text ({err.reason} at byte "
                             f"{err.start})") from None
    except json.JSONDecodeError as err:
        raise LightnetsError(f"{meta_path} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise LightnetsError(f"{meta_path} is not a lightnets checkpoint (no \"format\": \"{FORMAT}\")")
    return read_safetensors(weights), check_meta(meta, meta_path)


def save_state(path: Path, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Training state for exact resume: tensors plus JSON counters in one atomically written file."""
    replace_atomically(Path(path), lambda p: save_file(_plain(tensors), str(p), metadata={"info": json.dumps(info)}))


def load_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and counters ``save_state`` wrote; a damaged file is one error naming it."""
    if not Path(path).is_file():
        raise LightnetsError(f"cannot resume: {path} does not exist (the run saved no training state yet)")
    tensors = read_safetensors(Path(path))
    with safe_open(str(path), "pt") as f:
        info = (f.metadata() or {}).get("info")
    try:
        return tensors, json.loads(info)
    except (TypeError, json.JSONDecodeError):
        raise LightnetsError(f"cannot resume: {path} holds no readable training counters") from None


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state_dict into tensors (for safetensors) and everything else (for JSON)."""
    sd = optimizer.state_dict()
    tensors, other = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                other.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "other": other}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in info["other"].items():
        state.setdefault(int(idx), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def usable_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, refused in one line when it names no device or one this machine lacks
    (torch says so with a RuntimeError listing every backend it knows, or an AssertionError when first used)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise LightnetsError(f"unknown device {str(device)!r}; choose cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            why = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise LightnetsError(f"device {device} is not available: {why}; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise LightnetsError(f"device {device} is not available: {count} CUDA GPU(s) here, cuda:0 to "
                                 f"cuda:{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise LightnetsError(f"device {device} is not available: no Apple GPU here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise LightnetsError(f"device {str(device)!r} is not supported; choose cpu, cuda, cuda:N or mps")
    return dev


def restore_model(model: torch.nn.Module, weights: dict[str, torch.Tensor], meta: dict[str, Any], path: str | Path,
                  what: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """``model`` with a checkpoint's ``weights`` loaded (a mismatch is one clear error naming ``what``; a weight
    holding NaN or infinity, which would only show as NaN outputs, is refused), its metadata in
    ``model.checkpoint_meta``, on ``device`` in eval mode."""
    bad = first_non_finite(weights.items())
    if bad is not None:
        raise LightnetsError(f"checkpoint {path} is corrupt: weight {bad} holds NaN or infinite values")
    dev = usable_device(device)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise LightnetsError(f"the weights in {path} do not fit {what}: {str(err).splitlines()[0]}") from None
    model.checkpoint_meta = meta
    return model.to(dev).eval()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The model of a lightnets checkpoint, in eval mode; its metadata (classes, normalisation, input
    size, recipe, metrics) is in ``model.checkpoint_meta``. ``path``: a run folder (its best checkpoint),
    or a checkpoint's ``.safetensors``/``.json``."""
    from ..models import create_model

    weights, meta = load_checkpoint(path)
    model = create_model(meta["model"], num_classes=meta["num_classes"], **meta.get("model_args", {}))
    return restore_model(model, weights, meta, path, meta["model"], device)
