"""The ground floor of deployment: which ONNX runtimes can run here, and sessions and runners for an ONNX file.

Kept apart from exporting so that measurements (``lightnets.bench``) can run an ONNX file without importing the
exporter, the classifier or the trainer: this module imports nothing else from lightnets but its error type.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LightnetsError

# openvino_bf16 runs the fp32 file with OpenVINO's bf16 arithmetic, on CPUs with bf16 instructions: about twice
# the speed of fp32 where convolutions are compute-bound, with logits that differ from fp32 in the third digit.
RUNTIMES = ("onnxruntime", "openvino", "openvino_bf16")


def load_onnx(path: str | Path) -> Any:
    """The ONNX model at ``path`` (without external data); a file that is not one (truncated, or another format)
    is one error naming it, where onnx raises protobuf's ``DecodeError``."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path), load_external_data=False)
    except DecodeError as err:
        raise LightnetsError(f"{path} is not a readable ONNX file (truncated or damaged?): {err}") from None


def input_batch(path: str | Path) -> int | None:
    """The batch size an ONNX file was exported for, or None when it takes any batch."""
    dim = load_onnx(path).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else None


def onnx_session(path: str | Path, threads: int | None = None, providers: Sequence[str] | None = None,
                 spin: bool = True) -> Any:
    """An ONNX Runtime session with all graph optimisations, ``threads`` intra-op threads, sequential.

    ``spin=False`` stops idle worker threads from busy-waiting for the next run, which would steal
    the cores from whatever runs next (the benchmark interleaves backends); it costs a little latency.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise LightnetsError("onnxruntime is not installed: pip install 'lightnets[onnx]'") from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))


def runtime_missing(runtime: str) -> str | None:
    """Why ``runtime`` cannot run here (a package not installed, no bf16 instructions), or None when it can."""
    if runtime not in RUNTIMES:
        raise LightnetsError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    package = runtime.split("_")[0]
    if importlib.util.find_spec(package) is None:
        extra = "onnx" if package == "onnxruntime" else package
        return f"{package} is not installed: pip install 'lightnets[{extra}]'"
    if runtime == "openvino_bf16":
        import openvino as ov

        if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            return "this CPU has no bf16 instructions (OpenVINO reports none)"
    return None


def openvino_model(path: str | Path, threads: int | None = None, device: str = "CPU", precision: str = "f32") -> Any:
    """An OpenVINO compiled model (latency hint) for the ONNX file at ``path``, computing in ``precision``
    (``f32`` or ``bf16``); ``runtime_runner`` checks first that OpenVINO is installed."""
    import openvino as ov

    # Always set: left alone, OpenVINO computes in bf16 on CPUs with bf16 instructions, even for an fp32 file.
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(str(path), device, config)


def runtime_runner(path: str | Path, runtime: str, threads: int | None = None,
                   spin: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """A callable from a normalised float32 batch (numpy) to logits (numpy) on ``runtime``."""
    why = runtime_missing(runtime)
    if why:
        raise LightnetsError(f"runtime {runtime} cannot run here: {why}")
    if runtime == "onnxruntime":
        session = onnx_session(path, threads, spin=spin)
        return lambda x: session.run(None, {"input": x})[0]
    compiled = openvino_model(path, threads, precision="bf16" if runtime == "openvino_bf16" else "f32")
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})[0]
