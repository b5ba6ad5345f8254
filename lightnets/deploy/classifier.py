"""A classifier for deployment: what it needs besides its weights (``DeployInfo``), loading one to export, and
running an exported file with exactly the pre-processing PyTorch gets (``OnnxClassifier``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import normalize
from ..data.folder import decode_image, image_files
from ..errors import LightnetsError
from ..models import model_info
from ..weights import DataConfig, create_model
from .onnx import DeployInfo, read_metadata
from .runtimes import input_batch, runtime_missing, runtime_runner


def load_for_deploy(model_or_checkpoint: str, pretrained: bool | str | None = None) -> tuple[nn.Module, DeployInfo]:
    """A registered model name (random weights and ImageNet normalisation, or the ``pretrained`` weights with
    their class names and pre-processing) or a checkpoint, in eval mode.

    A checkpoint is a run folder (its best checkpoint) or a checkpoint's ``.safetensors``/``.json`` file.
    """
    path = Path(model_or_checkpoint)
    if path.suffix in (".safetensors", ".json") or path.exists():
        return _load_checkpoint(path)
    entry = model_info(model_or_checkpoint)
    model = create_model(model_or_checkpoint, pretrained=pretrained or False).eval()
    meta = getattr(model, "checkpoint_meta", None)
    if meta is not None:
        return model, DeployInfo.from_checkpoint(meta)
    names = [str(i) for i in range(model.num_classes)]
    return model, DeployInfo(entry.name, entry.input_size, names)


def _load_checkpoint(path: Path) -> tuple[nn.Module, DeployInfo]:
    """A training checkpoint through ``lightnets.train.checkpoint.load_model``, which refuses weights that do not
    fit. Imported here, not at the top: importing ``lightnets.train.checkpoint`` runs the ``lightnets.train``
    package, whose trainer imports this module."""
    from ..train.checkpoint import load_model

    model = load_model(path)
    return model, DeployInfo.from_checkpoint(model.checkpoint_meta)


def preprocess(images: Sequence[str | Path], info: DeployInfo) -> np.ndarray:
    """Image files to a normalised float32 batch exactly as ``predict_images`` feeds a model: shorter side
    resized to ``input_size / crop_pct`` and centre-cropped, scaled to 0..1, standardised with the model's mean and
    std."""
    pixels = torch.from_numpy(np.stack([decode_image(Path(f), info.input_size, info.crop_pct, info.interpolation)
                                        for f in images]))
    return normalize(pixels.permute(0, 3, 1, 2), list(info.mean), list(info.std), channels_last=False).numpy()


@torch.no_grad()
def predict_images(model: nn.Module, inputs: Sequence[str | Path], *, topk: int = 5, batch_size: int = 64,
                   strict: bool = False) -> tuple[list[tuple[Path, list[tuple[str, float]]]], list[Path]]:
    """Top-k (class, probability) for every image in ``inputs`` (files or folders), batched, for a model that
    carries ``checkpoint_meta`` (a loaded checkpoint, or an ``OnnxClassifier``), on the model's device.

    Returns the predictions and the files that could not be decoded (``strict`` raises on the first). The model
    runs in eval mode (batch norm on its running statistics) and is handed back in the mode it came in.
    """
    for name, value in (("topk", topk), ("batch size", batch_size)):
        if value < 1:
            raise LightnetsError(f"{name} must be at least 1, got {value}")
    meta = model.checkpoint_meta
    # Read before the loop: a key the checkpoint lacks is its error, not an "undecodable image".
    classes, config = meta["classes"], DataConfig.of_meta(meta)
    device = next(model.parameters(), torch.empty(0)).device
    files, skipped, results = image_files(list(inputs)), [], []
    k = min(topk, len(classes))  # more than there are classes: every class
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(files), batch_size):
            arrays, names = [], []
            for f in files[start:start + batch_size]:
                try:
                    arrays.append(torch.from_numpy(decode_image(f, config.input_size, config.crop_pct,
                                                                config.interpolation)))
                    names.append(f)
                except Exception as err:  # Pillow raises many types for a damaged file
                    if strict:
                        raise LightnetsError(f"cannot decode image {f}: {err}") from None
                    skipped.append(f)
            if not arrays:
                continue
            x = normalize(torch.stack(arrays).permute(0, 3, 1, 2).to(device), list(config.mean), list(config.std),
                          channels_last=False)
            p, idx = model(x).float().softmax(1).topk(k, 1)
            for f, pi, ii in zip(names, p.tolist(), idx.tolist(), strict=True):
                results.append((f, [(classes[i], v) for i, v in zip(ii, pi, strict=True)]))
    finally:
        model.train(was_training)
    return results, skipped


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
                                "std": list(self.info.std), "crop_pct": self.info.crop_pct,
                                "interpolation": self.info.interpolation}
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
        return predict_images(self, list(images), topk=top_k, strict=True)[0]


def load_images(folder: str | Path, info: DeployInfo, limit: int | None = None) -> tuple[np.ndarray, list[int | None]]:
    """The images under ``folder`` (sorted, at most ``limit``), pre-processed, each with its label: the
    index of its parent folder's name in the model's class names, or None where that is not a class."""
    files = image_files([folder])[:limit]
    index = {name: i for i, name in enumerate(info.class_names)}
    return preprocess(files, info), [index.get(p.parent.name) for p in files]
