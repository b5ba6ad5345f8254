"""Deployment: ONNX runtimes (``runtimes``), checked ONNX export (``onnx``), the exported classifier
(``classifier``). Layered in that order: each module imports, at run time, only those before it."""

from ..data.augment import IMAGENET_MEAN, IMAGENET_STD
from .classifier import (
    OnnxClassifier,
    load_for_deploy,
    load_images,
    predict_images,
    preprocess,
)
from .onnx import (
    DEFAULT_ATOL,
    PRECISIONS,
    DeployInfo,
    ExportResult,
    export_graph,
    export_onnx,
    fold_batchnorm,
    read_metadata,
    run_outputs,
    tolerance,
    top1_agreement,
    write_metadata,
)
from .runtimes import RUNTIMES, input_batch, onnx_session, openvino_model, runtime_missing, runtime_runner

__all__ = [
    "DEFAULT_ATOL",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRECISIONS",
    "RUNTIMES",
    "DeployInfo",
    "ExportResult",
    "OnnxClassifier",
    "export_graph",
    "export_onnx",
    "fold_batchnorm",
    "input_batch",
    "load_for_deploy",
    "load_images",
    "onnx_session",
    "openvino_model",
    "predict_images",
    "preprocess",
    "read_metadata",
    "run_outputs",
    "runtime_missing",
    "runtime_runner",
    "tolerance",
    "top1_agreement",
    "write_metadata",
]
