"""The ways a model can run for inference, each turned into a zero-argument callable to time.

A backend whose package (or, for torch.compile, C++ compiler) is missing is reported by
``backend_missing`` and skipped by the benchmark; only an unknown backend name is an error.
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..deploy.runtimes import RUNTIMES, runtime_missing, runtime_runner
from ..errors import LightnetsError

BACKENDS = ("eager", "channels_last", "compile", *RUNTIMES)
TRAINABLE = ("eager", "channels_last")  # backends whose training step rate is measured too


def check_backends(names: Sequence[str]) -> list[str]:
    """``names`` de-duplicated in order; an unknown name raises a ``LightnetsError`` listing the known ones."""
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise LightnetsError(f"unknown backend {unknown[0]!r}; choose from {', '.join(BACKENDS)}")
    if not names:
        raise LightnetsError(f"no backend given; choose from {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))


def backend_missing(name: str, device: str = "cpu") -> str | None:
    """Why ``name`` cannot run here (e.g. 'openvino is not installed'), or None when it can."""
    check_backends([name])
    if name in RUNTIMES:
        for package in ("onnx", "onnxscript"):  # the export
            if importlib.util.find_spec(package) is None:
                return f"{package} is not installed"
        if torch.device(device).type != "cpu":
            return f"{name} is measured on the CPU only"
        return runtime_missing(name)
    if name == "compile":
        if torch.device(device).type == "cuda" and importlib.util.find_spec("triton") is None:
            return "triton is not installed"
        if torch.device(device).type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
            return "no C++ compiler for torch.compile"
    return None


Runner = Callable[[torch.Tensor], Callable[[], object]]


def _torch_runner(model: nn.Module, memory_format: torch.memory_format) -> Runner:
    def bind(x: torch.Tensor) -> Callable[[], object]:
        x = x.contiguous(memory_format=memory_format)

        def run() -> object:
            with torch.inference_mode():
                return model(x)

        return run

    return bind


def _numpy_runner(call: Callable[[np.ndarray], np.ndarray]) -> Runner:
    def bind(x: torch.Tensor) -> Callable[[], object]:
        array = np.ascontiguousarray(x.detach().cpu().numpy(), np.float32)
        return lambda: call(array)

    return bind


def make_runner(name: str, model: nn.Module, onnx_path: Path | None = None, threads: int | None = None) -> Runner:
    """A function from an input batch to a callable that runs ``model`` on it with backend ``name``.

    ``model`` must be in eval mode on its device; it is copied where a backend would change it.
    ONNX backends run the file at ``onnx_path`` (exported with a dynamic batch, see
    ``lightnets.deploy.export_onnx``) with ``threads`` threads that do not spin while idle, so they
    leave the cores to the backend timed next.
    """
    check_backends([name])
    if name == "eager":
        return _torch_runner(model, torch.contiguous_format)
    if name == "channels_last":
        return _torch_runner(copy.deepcopy(model).to(memory_format=torch.channels_last), torch.channels_last)
    if name == "compile":
        return _torch_runner(torch.compile(model), torch.contiguous_format)
    if onnx_path is None:
        raise ValueError(f"backend {name!r} needs an exported ONNX file")
    return _numpy_runner(runtime_runner(onnx_path, name, threads, spin=False))


def to_numpy(output: object) -> np.ndarray:
    """A backend's output as a float32 array, whatever runtime produced it."""
    if isinstance(output, torch.Tensor):
        return output.detach().float().cpu().numpy()
    return np.asarray(output, np.float32)
