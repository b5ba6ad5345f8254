"""Convolutional Pose Machines (Wei et al. 2016) on any lightnets backbone.

The backbone's stages go through CenterNet's upsampling neck to one shared feature map at the output stride (8 by
default, as CPM). Stage 1 predicts K + 1 belief maps from those features (K joints and CPM's background); each
later stage sees the features together with the previous stage's maps and predicts them again, with wide
depthwise-separable 7x7 convolutions in place of CPM's large dense kernels, so a joint can be placed from where the
others were believed to be. Every stage is supervised (:func:`lightnets.pose.heatmaps.heatmap_loss`); the last one is
decoded (:func:`lightnets.pose.heatmaps.decode_heatmaps`).

    model = create_pose_machine("mobilenetv3_large_100", num_joints=14, pretrained=True)
    beliefs = model(images)                             # one (B, 15, H/8, W/8) per stage
    same = create_pose_machine(**model.config)          # the architecture again, for a checkpoint
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..data.augment import IMAGENET_MEAN, IMAGENET_STD
from ..detect.model import UpsampleNeck
from ..errors import LightnetsError
from ..layers import ConvBnAct, DepthwiseSeparable, init_weights
from ..models.base import LightNet
from ..weights import DataConfig, create_model, data_config

STAGE_KERNEL = 7  # depthwise kernel of the stages: each block widens a pixel's view by 6 output pixels


class BeliefStage(nn.Module):
    """One CPM stage: its input (the features, from stage 2 on with the previous belief maps) -> K + 1 belief maps.

    A 1x1 conv fuses the input, ``depth`` residual depthwise-separable 7x7 blocks give each pixel a wide context
    (three blocks see 19 x 19 output pixels, 152 input px at stride 8), and two 1x1 convs predict the maps, as CPM's
    stages end.
    """

    def __init__(self, in_chs: int, num_maps: int, chs: int, depth: int) -> None:
        super().__init__()
        self.fuse = ConvBnAct(in_chs, chs, 1)
        self.blocks = nn.Sequential(*(DepthwiseSeparable(chs, chs, kernel_size=STAGE_KERNEL) for _ in range(depth)))
        self.project = ConvBnAct(chs, chs, 1)
        self.output = nn.Conv2d(chs, num_maps, 1)

    def reset_output(self) -> None:
        """Small output weights and zero bias: the maps start near 0 rather than at random values of order 1."""
        nn.init.normal_(self.output.weight, std=0.01)
        nn.init.zeros_(self.output.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fuse(x)
        return self.output(self.project(x + self.blocks(x)))


class PoseMachine(nn.Module):
    """Backbone -> neck -> stage 1 -> ``stages - 1`` refining stages.

    ``forward`` returns one ``(B, K + 1, H/s, W/s)`` tensor of belief maps per stage (``s = output_stride``; the
    last channel is the background); all are supervised in training and the last is decoded at inference.
    """

    def __init__(self, backbone: LightNet, num_joints: int, stages: int = 3, neck_chs: int = 64, stage_chs: int = 64,
                 stage_depth: int = 3, output_stride: int = 8) -> None:
        super().__init__()
        for name, value in (("num_joints", num_joints), ("stages", stages), ("stage_depth", stage_depth)):
            if not isinstance(value, int) or value < 1:
                raise LightnetsError(f"{name} must be an integer >= 1, got {value!r}")
        backbone.drop_classifier()
        self.backbone = backbone
        self.num_joints = num_joints
        self.stages = stages
        self.output_stride = output_stride
        self.neck = UpsampleNeck(backbone.feature_info, neck_chs, output_stride)
        maps = num_joints + 1
        self.beliefs = nn.ModuleList([BeliefStage(neck_chs, maps, stage_chs, stage_depth)] + [
            BeliefStage(neck_chs + maps, maps, stage_chs, stage_depth) for _ in range(stages - 1)])
        init_weights(self.neck)
        for stage in self.beliefs:
            init_weights(stage)
            stage.reset_output()
        self.config: dict[str, Any] = {}
        self.data_config: DataConfig | None = None  # set by create_pose_machine: the mean and std to feed it

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.neck(self.backbone.forward_stages(x))
        outputs = [self.beliefs[0](features)]
        for stage in self.beliefs[1:]:
            outputs.append(stage(torch.cat([features, outputs[-1]], dim=1)))
        return outputs


def create_pose_machine(backbone: str, num_joints: int, stages: int = 3, output_stride: int = 8, neck_chs: int = 64,
                        stage_chs: int = 64, stage_depth: int = 3, in_chans: int = 3,
                        input_norm: Sequence[Sequence[float]] | None = None,
                        pretrained: bool | str | None = None, **backbone_overrides: Any) -> PoseMachine:
    """A pose machine on the registered backbone ``backbone`` (any name of ``lightnets.list_models()``).

    ``backbone_overrides`` go to the backbone's constructor (``width_mult=0.5``, ...). ``pretrained`` starts the
    backbone from weights (as ``lightnets.create_model``) with the options they need. The model does not normalise
    its input: the data pipeline standardises images with ``model.data_config.mean`` and ``.std``
    (``lightnets.data_config(model)`` returns it), which are the weights' own with ``pretrained``, ``input_norm``
    when given, ImageNet's otherwise; only those two fields apply to pose crops. ``config`` holds every argument,
    the mean and std included, enough to rebuild the model for a checkpoint.
    """
    backbone_model = create_model(backbone, num_classes=1, in_chans=in_chans, pretrained=pretrained or False,
                                  **backbone_overrides)
    weights_config = getattr(backbone_model, "data_config", None) or data_config(backbone)
    if pretrained:
        backbone_overrides = backbone_model.model_args
        input_norm = (weights_config.mean, weights_config.std)
    mean, std = input_norm or (IMAGENET_MEAN, IMAGENET_STD)
    model = PoseMachine(backbone_model, num_joints, stages=stages, neck_chs=neck_chs, stage_chs=stage_chs,
                        stage_depth=stage_depth, output_stride=output_stride)
    model.data_config = replace(weights_config, mean=tuple(mean), std=tuple(std))
    model.config = {"backbone": backbone, "num_joints": num_joints, "stages": stages, "output_stride": output_stride,
                    "neck_chs": neck_chs, "stage_chs": stage_chs, "stage_depth": stage_depth, "in_chans": in_chans,
                    "input_norm": [list(mean), list(std)], **backbone_overrides}
    return model
