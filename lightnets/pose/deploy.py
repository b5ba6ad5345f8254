"""Deploying a pose machine: ONNX export of the network up to its last stage's belief maps.

The graph takes the normalised float32 crop ``input`` ``(B, 3, S, S)`` (S the checkpoint's ``input_size``) and
returns ``logits``: the last stage's ``(B, K + 1, S / s, S / s)`` maps, the background last. Decoding (peak and
sub-pixel refinement, :func:`lightnets.pose.decode_heatmaps`) stays outside, so the export check compares the maps
value by value. The file's metadata holds what an application needs to crop, normalise and name the joints:
``class_names`` (the joints, then ``background``), ``mean``, ``std``, ``input_size``, ``output_stride``,
``flip_pairs`` and ``limbs``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..deploy.onnx import DEFAULT_ATOL, DeployInfo, ExportResult, export_onnx, export_target
from ..errors import LightnetsError
from .infer import load_pose_machine
from .model import PoseMachine


class LastStage(nn.Module):
    """A pose machine that returns only its last stage's maps, the one output deployment decodes."""

    def __init__(self, model: PoseMachine) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[-1]


def export_pose_machine(checkpoint: str | Path | PoseMachine, path: str | Path | None = None, *, opset: int = 18,
                        precision: str = "fp32", atol: float | None = None) -> ExportResult:
    """Fold batch norm, export a pose machine's last-stage maps to ONNX (batch free, the checkpoint's crop size),
    check them against PyTorch's on ONNX Runtime (``atol``, default per precision) and write the metadata.

    ``checkpoint`` is a pose run folder or checkpoint file, or a loaded :class:`PoseMachine` with its
    ``checkpoint_meta``; ``path`` defaults to the checkpoint's file with the suffix ``.onnx``.
    """
    model, path = export_target(checkpoint, path, PoseMachine, load_pose_machine)
    meta = getattr(model, "checkpoint_meta", None)
    if not meta:
        raise LightnetsError("the pose machine has no checkpoint_meta (joint names, normalisation, crop size): "
                             "load it with load_pose_machine")
    config = model.config
    info = DeployInfo(f"cpm{config['stages']}_{config['backbone']}", int(meta["input_size"]),
                      [*meta["joint_names"], "background"], tuple(meta["mean"]), tuple(meta["std"]), dict(config))
    extra = {"task": "pose", "output_stride": str(model.output_stride), "flip_pairs": json.dumps(meta["flip_pairs"]),
             "limbs": json.dumps(meta.get("limbs", [])), "outputs": json.dumps(["logits"])}
    return export_onnx(LastStage(model).eval(), path, info, opset=opset, dynamic_batch=True, precision=precision,
                       atol=DEFAULT_ATOL.get(precision) if atol is None else atol, extra_metadata=extra)
