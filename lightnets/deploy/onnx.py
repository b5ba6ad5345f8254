"""Export to ONNX, checked: fold batch norm, export, compare with PyTorch, write the metadata, quantize to int8.

An export is only written if ONNX Runtime reproduces PyTorch's logits on the check inputs (within
1e-4 in fp32): the file is built under a temporary name and renamed into place, so a failed
export never leaves a file a user could mistake for a good one. The model's class names and
input normalisation travel inside the file's metadata, so ``OnnxClassifier`` can pre-process
images exactly as the model expects without any other file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._io import atomic_output, write_failure
from .._version import __version__
from ..data.augment import IMAGENET_MEAN, IMAGENET_STD
from ..errors import LightnetsError
from ..weights.load import DataConfig
from .runtimes import load_onnx, onnx_session

# torch's exporter builds opset-18 graphs and converts them to the opset asked for: a newer one works, an older
# one fails and the exporter quietly writes 18 instead, so older opsets are refused.
MIN_OPSET = 18


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
    crop_pct: float = 1.0
    interpolation: str = "bilinear"

    def metadata(self) -> dict[str, str]:
        """The ONNX ``metadata_props`` entries (strings; lists as JSON)."""
        meta = {} if self.top1 is None else {"top1": str(self.top1)}
        return meta | {
            "lightnets.version": __version__,
            "model_name": self.model_name,
            "model_args": json.dumps(self.model_args),
            "input_size": str(self.input_size),
            "class_names": json.dumps(self.class_names),
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "crop_pct": str(self.crop_pct),
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_checkpoint(cls, meta: Mapping[str, Any]) -> DeployInfo:
        """What a checkpoint's metadata (or a pretrained model's ``checkpoint_meta``) says about feeding the model."""
        top1 = (meta.get("metrics") or {}).get("val_top1")  # percent
        config = DataConfig.of_meta(meta)
        return cls(meta["model"], config.input_size, list(meta["classes"]), config.mean, config.std,
                   dict(meta.get("model_args") or {}), None if top1 is None else top1 / 100, config.crop_pct,
                   config.interpolation)

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> DeployInfo:
        missing = {"model_name", "input_size", "class_names", "mean", "std"} - set(meta)
        if missing:
            raise LightnetsError(f"the ONNX file has no lightnets metadata ({', '.join(sorted(missing))} missing); "
                                 "export it with `lightnets export`")
        try:
            return cls(meta["model_name"], int(meta["input_size"]), json.loads(meta["class_names"]),
                       tuple(json.loads(meta["mean"])), tuple(json.loads(meta["std"])),
                       json.loads(meta.get("model_args", "{}")), float(meta["top1"]) if "top1" in meta else None,
                       float(meta.get("crop_pct", 1.0)), meta.get("interpolation", "bilinear"))
        except (TypeError, ValueError) as err:  # json's JSONDecodeError is a ValueError
            raise LightnetsError(f"the ONNX file's lightnets metadata is damaged ({err}); export it again") from None


PRECISIONS = ("fp32", "fp16", "int8")
# Worst logit difference accepted per precision, for logits up to 1 in magnitude; beyond that the bound
# grows with the largest logit, as fp32 rounding does (an untrained DenseNet-121's logits reach 1e7).
# int8 is judged by agreeing predictions instead.
DEFAULT_ATOL = {"fp32": 1e-4, "fp16": 1e-2}


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
    extra_metadata: dict[str, str] | None = None,
) -> ExportResult:
    """Fold batch norm, export ``model`` to ``path``, check it with ONNX Runtime, and write the metadata.

    ``check_inputs`` (normalised images, N x C x H x W) default to 8 seeded random images. ``fp16``
    computes in half precision behind fp32 inputs and outputs; ``int8`` is ONNX Runtime static
    quantization (QDQ, per-channel weights) calibrated on ``calibration`` (normalised images).
    The check accepts a worst logit difference of ``atol`` (default: 1e-4 fp32, 1e-2 fp16; none for
    int8) times the largest logit where that exceeds 1. ``extra_metadata`` joins ``info``'s (a task's own
    keys). Raises ``LightnetsError`` and writes nothing when the check fails.
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
    try:
        with atomic_output(path) as tmp:
            export_graph(to_export, example, tmp, opset, dynamic_batch)
            if precision == "int8":
                _quantize_int8(tmp, calibration, dynamic_batch)
            write_metadata(tmp, info.metadata() | (extra_metadata or {}) | {"precision": precision})
            got = _run_for_check(tmp, check_inputs.numpy(), dynamic_batch)
            diff = float(np.abs(got - reference).max())
            agree = top1_agreement(got, reference)
            limit = DEFAULT_ATOL.get(precision) if atol is None else atol
            if limit is not None:
                limit = tolerance(limit, reference)
            if limit is not None and not diff <= limit:
                raise LightnetsError(f"export failed the numeric check: max |logit difference| {diff:.3g} > "
                                     f"{limit:g} ({precision}); nothing was written to {str(path)!r}")
    except OSError as err:  # a full disk, a read-only folder: Python's error names only the temporary file
        raise write_failure(path, err) from None
    return ExportResult(path, precision, opset, n_folded, diff, agree)


def export_target(checkpoint: Any, path: str | Path | None, model_type: type, load: Callable[[Any], nn.Module]
                  ) -> tuple[nn.Module, Path]:
    """What a task's export works on: the model (given as a ``model_type`` instance, or loaded from a checkpoint by
    ``load``) in eval mode, and the .onnx path (default: beside the checkpoint; required with a model)."""
    if isinstance(checkpoint, model_type):
        if path is None:
            raise LightnetsError("give the path of the .onnx file to write")
        return checkpoint.eval(), Path(path)
    # Here, not at the top: importing lightnets.train's package imports this module back (train.classify).
    from ..train.checkpoint import checkpoint_paths

    return load(checkpoint), Path(checkpoint_paths(checkpoint)[0].with_suffix(".onnx") if path is None else path)


def check_opset(opset: int) -> None:
    """Refuse an opset the exporter would not write as asked (see ``MIN_OPSET``) or that onnx does not know."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise LightnetsError(f"ONNX opset {opset} is not supported: torch's exporter writes opsets {MIN_OPSET} to "
                             f"{newest} here")


def export_graph(model: nn.Module, example: torch.Tensor, path: Path, opset: int, dynamic_batch: bool = False,
                 output_names: Sequence[str] = ("logits",), dynamic_size: bool = False) -> None:
    """``model`` (eval mode) traced on ``example`` into the ONNX file ``path``: one input named ``input``, the
    outputs named ``output_names``, the batch axis free with ``dynamic_batch``, height and width (axes 2 and 3 of the
    input and of every output: dense outputs such as a segmenter's) free with ``dynamic_size``; the exporter's
    chatter hidden."""
    check_opset(opset)
    names = ["input", *output_names]
    free = ({0: "batch"} if dynamic_batch else {}) | ({2: "height", 3: "width"} if dynamic_size else {})
    axes = {name: dict(free) for name in names} if free else None
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
    return {p.key: p.value for p in load_onnx(path).metadata_props}


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
