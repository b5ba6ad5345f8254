"""CenterNet ("Objects as Points", Zhou et al. 2019) on any lightnets backbone, with stacked refinement.

The backbone's stage outputs go through a light upsampling neck to one shared feature map at the output
stride (4 by default). A stage of heads predicts a per-class center heatmap, the box size and the sub-pixel
center offset there. With ``stacks > 1`` each further stage sees the shared features together with the previous
stage's predictions and predicts them again (intermediate supervision, as in convolutional pose machines), so
characters can be placed relative to their neighbours; inference uses the last stage.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import IMAGENET_MEAN, IMAGENET_STD
from ..errors import LightnetsError
from ..layers import ConvBnAct, DepthwiseSeparable, init_weights
from ..models.base import FeatureInfo, LightNet, check_num_classes
from ..weights import create_model, data_config

HEATMAP_PRIOR = 0.1  # the heatmap bias starts every pixel at this probability, so early focal losses stay small


class UpsampleNeck(nn.Module):
    """Brings the deepest stage to ``output_stride`` by 2x upsampling steps, adding a 1x1 lateral of the
    backbone stage at each intermediate stride (stride 16, 8, 4 ...) and smoothing with a depthwise-separable conv.
    """

    def __init__(self, feature_info: list[FeatureInfo], channels: int, output_stride: int) -> None:
        super().__init__()
        if output_stride < 1 or output_stride & (output_stride - 1):
            raise LightnetsError(f"output_stride must be a power of two, got {output_stride!r}")
        deepest = feature_info[-1]
        if deepest.stride < output_stride:
            raise LightnetsError(
                f"the backbone's deepest stage has stride {deepest.stride}, below the output stride {output_stride}"
            )
        # The last stage at each stride carries the richest features at that resolution.
        last_at_stride = {f.stride: i for i, f in enumerate(feature_info)}
        self.deepest_index = len(feature_info) - 1
        self.top = ConvBnAct(deepest.channels, channels, 1)
        self.skip_indices: list[int | None] = []
        laterals, smooths = [], []
        stride = deepest.stride
        while stride > output_stride:
            stride //= 2
            index = last_at_stride.get(stride)
            self.skip_indices.append(index)
            laterals.append(ConvBnAct(feature_info[index].channels, channels, 1, act=None)
                            if index is not None else nn.Identity())
            smooths.append(DepthwiseSeparable(channels, channels))
        self.laterals = nn.ModuleList(laterals)
        self.smooths = nn.ModuleList(smooths)
        self.out_chs = channels

    def forward(self, stages: list[torch.Tensor]) -> torch.Tensor:
        x = self.top(stages[self.deepest_index])
        for index, lateral, smooth in zip(self.skip_indices, self.laterals, self.smooths, strict=True):
            if index is None:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            else:
                skip = stages[index]
                x = F.interpolate(x, size=skip.shape[-2:], mode="nearest") + lateral(skip)
            x = smooth(x)
        return x


class PredictionHeads(nn.Module):
    """Heatmap logits (C channels), box size and center offset (2 channels each), in output-stride pixels."""

    def __init__(self, in_chs: int, num_classes: int, head_chs: int) -> None:
        super().__init__()

        def head(out_chs: int) -> nn.Sequential:
            return nn.Sequential(DepthwiseSeparable(in_chs, head_chs), nn.Conv2d(head_chs, out_chs, 1))

        self.heatmap = head(num_classes)
        self.size = head(2)
        self.offset = head(2)

    def reset_outputs(self) -> None:
        """Small output weights and the heatmap bias at the prior, so every head starts near its prior
        instead of at large random values that swamp the first steps (RetinaNet's head initialisation)."""
        for head in (self.heatmap, self.size, self.offset):
            nn.init.normal_(head[-1].weight, std=0.01)
            nn.init.zeros_(head[-1].bias)
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"heatmap": self.heatmap(x), "size": self.size(x), "offset": self.offset(x)}


class RefinementStage(nn.Module):
    """Shared features + the previous stage's heatmap (as probabilities), size and offset -> new predictions.

    Wide (5x5) depthwise kernels give each pixel the context of its neighbours' predictions.
    """

    def __init__(self, feature_chs: int, num_classes: int, head_chs: int, depth: int) -> None:
        super().__init__()
        self.fuse = ConvBnAct(feature_chs + num_classes + 4, feature_chs, 1)
        self.blocks = nn.Sequential(*(DepthwiseSeparable(feature_chs, feature_chs, kernel_size=5)
                                      for _ in range(depth)))
        self.heads = PredictionHeads(feature_chs, num_classes, head_chs)

    def forward(self, features: torch.Tensor, previous: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.fuse(torch.cat(
            [features, previous["heatmap"].sigmoid(), previous["size"], previous["offset"]], dim=1))
        return self.heads(x + self.blocks(x))


class CenterNet(nn.Module):
    """Backbone -> neck -> first heads -> ``stacks - 1`` refinement stages.

    ``forward`` returns one prediction dict per stage (``heatmap`` logits ``(B, C, H/s, W/s)``, ``size`` and
    ``offset`` ``(B, 2, H/s, W/s)`` in output-stride pixels, ``s = output_stride``); every stage is supervised
    in training and the last one is decoded at inference (:func:`lightnets.detect.decode`).
    """

    def __init__(self, backbone: LightNet, num_classes: int, stacks: int = 1, neck_chs: int = 64,
                 head_chs: int = 64, output_stride: int = 4, refine_depth: int = 2,
                 input_norm: tuple[list[float], list[float]] | None = None) -> None:
        super().__init__()
        # Pages are always standardised with ImageNet's mean and std; a backbone whose weights expect others gets
        # its own by one per-channel affine map (exact, and exported with the model).
        mean, std = input_norm or (IMAGENET_MEAN, IMAGENET_STD)
        scale = torch.tensor(IMAGENET_STD) / torch.tensor(std)
        self.register_buffer("input_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", ((torch.tensor(IMAGENET_MEAN) - torch.tensor(mean)) / torch.tensor(std))
                             .view(1, 3, 1, 1), persistent=False)
        self.renormalise = input_norm is not None
        check_num_classes(num_classes)
        if not isinstance(stacks, int) or stacks < 1:
            raise LightnetsError(f"stacks must be an integer >= 1, got {stacks!r}")
        backbone.drop_classifier()
        self.backbone = backbone
        self.num_classes = num_classes
        self.stacks = stacks
        self.output_stride = output_stride
        self.neck = UpsampleNeck(backbone.feature_info, neck_chs, output_stride)
        self.heads = PredictionHeads(neck_chs, num_classes, head_chs)
        self.refinements = nn.ModuleList(RefinementStage(neck_chs, num_classes, head_chs, refine_depth)
                                         for _ in range(stacks - 1))
        for module in (self.neck, self.heads, self.refinements):
            init_weights(module)
        self.heads.reset_outputs()
        for stage in self.refinements:
            stage.heads.reset_outputs()
        self.config: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        if self.renormalise:
            x = x * self.input_scale.to(x.dtype) + self.input_shift.to(x.dtype)
        features = self.neck(self.backbone.forward_stages(x))
        outputs = [self.heads(features)]
        for stage in self.refinements:
            outputs.append(stage(features, outputs[-1]))
        return outputs


def create_detector(backbone: str, num_classes: int, stacks: int = 1, in_chans: int = 3, neck_chs: int = 64,
                    head_chs: int = 64, output_stride: int = 4, refine_depth: int = 2,
                    input_norm: tuple[list[float], list[float]] | None = None, pretrained: bool | str | None = None,
                    **backbone_overrides: Any) -> CenterNet:
    """A CenterNet on the registered backbone ``backbone`` (any name of ``lightnets.list_models()``).

    ``backbone_overrides`` go to the backbone's constructor (``width_mult=0.5``, ...). ``pretrained`` starts the
    backbone from weights (as ``lightnets.create_model``), with the options and the mean and std (``input_norm``)
    they need. The returned model's ``config`` holds every argument, enough to rebuild it for a checkpoint.
    """
    backbone_model = create_model(backbone, num_classes=1, in_chans=in_chans, pretrained=pretrained or False,
                                  **backbone_overrides)
    if pretrained:
        backbone_overrides = backbone_model.model_args
        config = data_config(backbone_model)
        if (config.mean, config.std) != (IMAGENET_MEAN, IMAGENET_STD):
            input_norm = (list(config.mean), list(config.std))
    model = CenterNet(backbone_model, num_classes, stacks=stacks, neck_chs=neck_chs, head_chs=head_chs,
                      output_stride=output_stride, refine_depth=refine_depth, input_norm=input_norm)
    model.config = {"backbone": backbone, "num_classes": num_classes, "stacks": stacks, "in_chans": in_chans,
                    "neck_chs": neck_chs, "head_chs": head_chs, "output_stride": output_stride,
                    "refine_depth": refine_depth, **({"input_norm": input_norm} if input_norm else {}),
                    **backbone_overrides}
    return model
