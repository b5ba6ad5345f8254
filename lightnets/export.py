"""Deployment: fold batch norm, export to ONNX, check the export against PyTorch, run it fast.

An export is only written if ONNX Runtime reproduces PyTorch's logits on the check inputs (within
1e-4 in fp32): the file is built under a temporary name and renamed into place, so a failed
export never leaves a file a user could mistake for a good one. The model's class names and
input normalisation travel inside the file's metadata, so ``OnnxClassifier`` can pre-process
images exactly as the model expects without any other file.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import LightnetsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRECISIONS = ("fp32", "fp16", "int8")
# openvino_bf16 runs the fp32 file with OpenVINO's bf16 arithmetic, on CPUs with bf16 instructions: about twice
# the speed of fp32 where convolutions are compute-bound, with logits that differ from fp32 in the third digit.
RUNTIMES = ("onnxruntime", "openvino", "openvino_bf16")
# Worst logit difference accepted per precision, for logits up to 1 in magnitude; beyond that the bound
# grows with the largest logit, as fp32 rounding does (an untrained DenseNet-121's logits reach 1e7).
# int8 is judged by agreeing predictions instead.
DEFAULT_ATOL = {"fp32": 1e-4, "fp16": 1e-2}


@dataclass(frozen=True)
class DeployInfo:
    """What a deployed model needs besides its weights: how to feed it and how to name its outputs."""

    model_name: str
    input_size: int
    class_names: list[str]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    model_args: dict[str, Any] = field(default_factory=dict)
    top1: float | None = None  # accuracy the checkpoint records, as a fraction

    def metadata(self) -> dict[str, str]:
        """The ONNX ``metadata_props`` entries (strings; lists as JSON)."""
        from . import __version__

        meta = {} if self.top1 is None else {"top1": str(self.top1)}
        return meta | {
            "lightnets.version": __version__,
            "model_name": self.model_name,
            "model_args": json.dumps(self.model_args),
            "input_size": str(self.input_size),
            "class_names": json.dumps(self.class_names),
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> DeployInfo:
        missing = {"model_name", "input_size", "class_names", "mean", "std"} - set(meta)
        if missing:
            raise LightnetsError(f"the ONNX file has no lightnets metadata ({', '.join(sorted(missing))} missing); "
                                 "export it with `lightnets export`")
        return cls(meta["model_name"], int(meta["input_size"]), json.loads(meta["class_names"]),
                   tuple(json.loads(meta["mean"])), tuple(json.loads(meta["std"])),
                   json.loads(meta.get("model_args", "{}")), float(meta["top1"]) if "top1" in meta else None)


def load_for_deploy(model_or_checkpoint: str) -> tuple[nn.Module, DeployInfo]:
    """A registered model name (random weights, ImageNet normalisation) or a checkpoint, in eval mode.

    A checkpoint is a run folder (its best checkpoint) or a checkpoint's ``.safetensors``/``.json`` file.
    """
    from .models import create_model, model_info

    path = Path(model_or_checkpoint)
    if path.suffix in (".safetensors", ".json") or path.exists():
        return _load_checkpoint(path)
    entry = model_info(model_or_checkpoint)
    model = create_model(model_or_checkpoint).eval()
    names = [str(i) for i in range(model.num_classes)]
    return model, DeployInfo(entry.name, entry.input_size, names)


def _load_checkpoint(path: Path) -> tuple[nn.Module, DeployInfo]:
    """A training checkpoint through ``lightnets.train.load_model``, which refuses weights that do not fit."""
    from .train import load_model

    model = load_model(path)
    meta = model.checkpoint_meta
    top1 = (meta.get("metrics") or {}).get("val_top1")  # percent
    info = DeployInfo(meta["model"], int(meta["image_size"]), list(meta["classes"]), tuple(meta["mean"]),
                      tuple(meta["std"]), dict(meta.get("model_args") or {}), None if top1 is None else top1 / 100)
    return model, info


def top1_agreement(logits: np.ndarray, reference: np.ndarray, tie: float = 1e-5) -> float:
    """Share of rows whose top class is also top in ``reference``, up to ties within ``tie``.

    Untrained networks give near-equal logits, so a 1e-10 rounding difference can swap two classes
    that are equally likely; that is not a changed prediction.
    """
    picked = np.take_along_axis(reference, logits.argmax(1)[:, None], 1)[:, 0]
    return float((picked >= reference.max(1) - tie).mean())


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """An eval-mode copy with every BatchNorm2d that directly follows a Conv2d folded into that conv.

    Inference then skips a normalisation pass over every feature map. Pairs are found where a
    Sequential holds a conv immediately followed by its batch norm (``ConvBnAct`` and friends);
    the batch norm becomes an ``Identity``. Returns the copy and the number of folded pairs.
    """
    folded = copy.deepcopy(model).eval()
    count = 0
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = seq._modules[a], seq._modules[b]
            if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
                    and bn.num_features == conv.out_channels):
                _fold_into(conv, bn)
                seq._modules[b] = nn.Identity()
                count += 1
    return folded, count


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    conv.bias = nn.Parameter(shift)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    precision: str
    opset: int
    folded_bn: int
    max_abs_diff: float  # worst logit difference against PyTorch fp32 on the check inputs
    top1_agreement: float  # share of check inputs whose top class matches PyTorch's


class _Half(nn.Module):
    """Runs the wrapped model in fp16 while the file keeps fp32 inputs and outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter reports progress and deprecations on stdout, warnings and logging; a CLI wants none."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to build an export in; renamed onto ``path`` when the block succeeds and
    removed when it raises, so a failed export never leaves a file a user could mistake for a good one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def tolerance(atol: float, reference: np.ndarray) -> float:
    """The accepted worst difference: ``atol`` for outputs up to 1 in magnitude, growing with the largest
    reference value beyond that, as fp32 rounding does."""
    return atol * max(1.0, float(np.abs(reference).max()))


def export_onnx(
    model: nn.Module,
    path: str | Path,
    info: DeployInfo,
    *,
    opset: int = 18,
    dynamic_batch: bool = False,
    precision: str = "fp32",
    check_inputs: torch.Tensor | None = None,
    calibration: np.ndarray | None = None,
    atol: float | None = None,
) -> ExportResult:
    """Fold batch norm, export ``model`` to ``path``, check it with ONNX Runtime, and write the metadata.

    ``check_inputs`` (normalised images, N x C x H x W) default to 8 seeded random images. ``fp16``
    computes in half precision behind fp32 inputs and outputs; ``int8`` is ONNX Runtime static
    quantization (QDQ, per-channel weights) calibrated on ``calibration`` (normalised images).
    The check accepts a worst logit difference of ``atol`` (default: 1e-4 fp32, 1e-2 fp16; none for
    int8) times the largest logit where that exceeds 1. Raises ``LightnetsError`` and writes nothing
    when the check fails.
    """
    if precision not in PRECISIONS:
        raise LightnetsError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "int8" and (calibration is None or len(calibration) == 0):
        raise LightnetsError("int8 export needs calibration images (--calibration DIR)")
    path = Path(path)
    folded, n_folded = fold_batchnorm(model)
    in_chans = getattr(model, "in_chans", 3)
    if check_inputs is None:
        generator = torch.Generator().manual_seed(0)
        check_inputs = torch.randn(8, in_chans, info.input_size, info.input_size, generator=generator)
    example = check_inputs[:1]
    with torch.no_grad():
        reference = model.eval()(check_inputs).float().numpy()
    to_export = _Half(copy.deepcopy(folded)) if precision == "fp16" else folded
    with atomic_output(path) as tmp:
        export_graph(to_export, example, tmp, opset, dynamic_batch)
        if precision == "int8":
            _quantize_int8(tmp, calibration, dynamic_batch)
        write_metadata(tmp, info.metadata() | {"precision": precision})
        got = _run_for_check(tmp, check_inputs.numpy(), dynamic_batch)
        diff = float(np.abs(got - reference).max())
        agree = top1_agreement(got, reference)
        limit = DEFAULT_ATOL.get(precision) if atol is None else atol
        if limit is not None:
            limit = tolerance(limit, reference)
        if limit is not None and not diff <= limit:
            raise LightnetsError(f"export failed the numeric check: max |logit difference| {diff:.3g} > {limit:g} "
                                 f"({precision}); nothing was written to {str(path)!r}")
    return ExportResult(path, precision, opset, n_folded, diff, agree)


def export_graph(model: nn.Module, example: torch.Tensor, path: Path, opset: int, dynamic_batch: bool = False,
                 output_names: Sequence[str] = ("logits",)) -> None:
    """``model`` (eval mode) traced on ``example`` into the ONNX file ``path``: one input named ``input``, the
    outputs named ``output_names``, the batch axis free with ``dynamic_batch``; the exporter's chatter hidden."""
    names = ["input", *output_names]
    axes = {name: {0: "batch"} for name in names} if dynamic_batch else None
    with _quiet():
        torch.onnx.export(model.eval(), (example,), str(path), input_names=["input"], output_names=list(output_names),
                          opset_version=opset, dynamic_axes=axes, dynamo=True, external_data=False)


def run_outputs(path: Path, inputs: np.ndarray, dynamic_batch: bool = False) -> list[np.ndarray]:
    """Every output of the ONNX file for ``inputs`` on ONNX Runtime, one image at a time unless ``dynamic_batch``."""
    session = onnx_session(path)
    if dynamic_batch:
        return session.run(None, {"input": inputs})
    per_image = [session.run(None, {"input": inputs[i:i + 1]}) for i in range(len(inputs))]
    return [np.concatenate(outputs) for outputs in zip(*per_image, strict=True)]


def _run_for_check(path: Path, inputs: np.ndarray, dynamic_batch: bool) -> np.ndarray:
    return run_outputs(path, inputs, dynamic_batch)[0]


def write_metadata(path: Path, meta: dict[str, str]) -> None:
    """Replace the ONNX file's ``metadata_props`` by ``meta``."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def _quantize_int8(path: Path, calibration: np.ndarray, dynamic_batch: bool) -> None:
    """Replace the fp32 file at ``path`` by its statically quantized (QDQ, per-channel) int8 version."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    step = 16 if dynamic_batch else 1
    images = calibration.astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = (images[i:i + step] for i in range(0, len(images), step))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    prepared = path.with_name(path.name + ".pre")
    try:
        with _quiet():
            quant_pre_process(str(path), str(prepared))
            quantize_static(str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)


def input_batch(path: str | Path) -> int | None:
    """The batch size an ONNX file was exported for, or None when it takes any batch."""
    import onnx

    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else None


def onnx_session(path: str | Path, threads: int | None = None, providers: Sequence[str] | None = None,
                 spin: bool = True):
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


def openvino_model(path: str | Path, threads: int | None = None, device: str = "CPU", precision: str = "f32"):
    """An OpenVINO compiled model (latency hint) for the ONNX file at ``path``, computing in ``precision``
    (``f32`` or ``bf16``); ``runtime_runner`` checks first that OpenVINO is installed."""
    import openvino as ov

    # Always set: left alone, OpenVINO computes in bf16 on CPUs with bf16 instructions, even for an fp32 file.
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(str(path), device, config)


def runtime_runner(path: str | Path, runtime: str, threads: int | None = None, spin: bool = True):
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


def preprocess(images: Sequence[str | Path], info: DeployInfo) -> np.ndarray:
    """Image files to a normalised float32 batch exactly as ``lightnets predict`` feeds PyTorch: shorter
    side resized to the input size and centre-cropped, scaled to 0..1, standardised with the model's
    mean and std."""
    from .data import normalize
    from .data.folder import decode_image

    pixels = torch.from_numpy(np.stack([decode_image(Path(f), info.input_size) for f in images]))
    return normalize(pixels.permute(0, 3, 1, 2), list(info.mean), list(info.std), channels_last=False).numpy()


class OnnxClassifier(nn.Module):
    """An exported classifier on ONNX Runtime or OpenVINO behind the module interface ``lightnets.predict``
    takes, so ONNX inference gets exactly the same pre-processing (from the file's metadata) as PyTorch's.

    >>> clf = OnnxClassifier("model.onnx", runtime="openvino")
    >>> clf.predict(["cat.png"])  # [(PosixPath('cat.png'), [('cat', 0.93)])]
    """

    def __init__(self, path: str | Path, runtime: str = "onnxruntime", threads: int | None = None) -> None:
        runtime_missing(runtime)  # an unknown name fails before the file is looked at
        path = Path(path)
        if not path.is_file() or path.suffix != ".onnx":
            raise FileNotFoundError(f"no .onnx file at {str(path)!r} (export one with `lightnets export`)")
        super().__init__()
        self.info = DeployInfo.from_metadata(read_metadata(path))
        self.checkpoint_meta = {"model": self.info.model_name, "classes": self.info.class_names,
                                "image_size": self.info.input_size, "mean": list(self.info.mean),
                                "std": list(self.info.std)}
        self.runtime = runtime
        self._run = runtime_runner(path, runtime, threads)
        self.fixed_batch = input_batch(path)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits of a normalised batch, run in slices of the file's batch size when it is fixed."""
        step = self.fixed_batch or len(batch)
        return np.concatenate([self._run(np.ascontiguousarray(batch[i:i + step])) for i in range(0, len(batch), step)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.logits(x.detach().float().cpu().numpy())).to(x.device)

    def predict(self, images: Sequence[str | Path], top_k: int = 1) -> list[tuple[Path, list[tuple[str, float]]]]:
        """Each image file with its ``top_k`` (class name, probability) pairs, as ``lightnets.predict`` gives."""
        from .train import predict

        return predict(self, list(images), topk=top_k, device="cpu", strict=True)[0]


def load_images(folder: str | Path, info: DeployInfo, limit: int | None = None) -> tuple[np.ndarray, list[int | None]]:
    """The images under ``folder`` (sorted, at most ``limit``), pre-processed, each with its label: the
    index of its parent folder's name in the model's class names, or None where that is not a class."""
    from .train.classify import image_files

    files = image_files([folder])[:limit]
    index = {name: i for i, name in enumerate(info.class_names)}
    return preprocess(files, info), [index.get(p.parent.name) for p in files]


def compare_onnx(paths: dict[str, Path], images: np.ndarray, labels: Sequence[int | None],
                 threads: int | None = None, min_time: float = 2.0) -> list[dict[str, str]]:
    """Side by side on ONNX Runtime: batch-1 latency (interleaved), agreement with the first file's
    predictions, and accuracy where every image has a label. Rows for ``format_table``."""
    from .bench.timing import time_interleaved

    runners = {name: runtime_runner(path, "onnxruntime", threads, spin=False) for name, path in paths.items()}
    outputs = {name: np.concatenate([run(images[i:i + 1]) for i in range(len(images))])
               for name, run in runners.items()}
    timed = time_interleaved({name: (lambda run=run: run(images[:1])) for name, run in runners.items()},
                             min_time=min_time)
    reference = next(iter(outputs.values()))
    labelled = all(label is not None for label in labels)
    rows = []
    for name, out in outputs.items():
        accuracy = float((out.argmax(1) == np.asarray(labels)).mean()) if labelled else None
        rows.append({
            "model": name,
            "bs1 ms": f"{timed.timings[name].median_ms:.2f}",
            "x first": f"{timed.ratios[name]:.2f}",
            "top-1 agree": f"{100 * top1_agreement(out, reference):.1f}%",
            "accuracy %": "-" if accuracy is None else f"{100 * accuracy:.2f}",
            "images": str(len(images)),
        })
    return rows
