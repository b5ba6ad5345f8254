"""Checkpoints as safetensors weights plus JSON, written atomically; nothing is ever unpickled.

A *checkpoint* (``best``, ``last``) is what a user deploys: ``NAME.safetensors`` holds the model's
weights and ``NAME.json`` says how to rebuild and feed it (model name and arguments, class names,
normalisation, recipe, metrics). The *training state* (``state.safetensors``) is what ``--resume``
needs on top: optimizer tensors, raw and EMA weights, with the counters as JSON in its header, so
one rename commits all of it at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .._io import replace_atomically
from ..errors import LightnetsError

FORMAT = "lightnets-checkpoint"


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
    """The weights and metadata of a checkpoint (see ``checkpoint_paths`` for what ``path`` may be)."""
    weights, meta_path = checkpoint_paths(path)
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise LightnetsError(f"{meta_path} is not valid JSON ({err})") from None
    if meta.get("format") != FORMAT:
        raise LightnetsError(f"{meta_path} is not a lightnets checkpoint (no \"format\": \"{FORMAT}\")")
    return load_file(str(weights)), meta


def save_state(path: Path, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Training state for exact resume: tensors plus JSON counters in one atomically written file."""
    replace_atomically(Path(path), lambda p: save_file(_plain(tensors), str(p), metadata={"info": json.dumps(info)}))


def load_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not Path(path).is_file():
        raise LightnetsError(f"cannot resume: {path} does not exist (the run saved no training state yet)")
    with safe_open(str(path), "pt") as f:
        info = json.loads(f.metadata()["info"])
    return load_file(str(path)), info


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


def restore_model(model: torch.nn.Module, weights: dict[str, torch.Tensor], meta: dict[str, Any], path: str | Path,
                  what: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """``model`` with a checkpoint's ``weights`` loaded (a mismatch is one clear error naming ``what``),
    its metadata in ``model.checkpoint_meta``, on ``device`` in eval mode."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise LightnetsError(f"the weights in {path} do not fit {what}: {str(err).splitlines()[0]}") from None
    model.checkpoint_meta = meta
    return model.to(device).eval()


def load_model(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The model of a lightnets checkpoint, in eval mode; its metadata (classes, normalisation, input
    size, recipe, metrics) is in ``model.checkpoint_meta``. ``path``: a run folder (its best checkpoint),
    or a checkpoint's ``.safetensors``/``.json``."""
    from ..models import create_model

    weights, meta = load_checkpoint(path)
    model = create_model(meta["model"], num_classes=meta["num_classes"], **meta.get("model_args", {}))
    return restore_model(model, weights, meta, path, meta["model"], device)
