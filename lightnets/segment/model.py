"""Semantic segmentation heads on any lightnets backbone: LR-ASPP (MobileNetV3, Howard et al. 2019, Section 6.4),
R-ASPP (MobileNetV2, Sandler et al. 2018) and an FCN head, for comparison.

Every head reads the backbone's final features (``forward_features``: the last stage after its final 1x1 layer,
960 channels on MobileNetV3-Large) at the output stride, LR-ASPP also one higher-resolution stage (stride 8 by
default). The logits come out at the input's size (bilinear upsampling), so the loss and the metrics see the
label map as it is.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LightnetsError
from ..layers import ConvBnAct, init_weights
from ..models.base import LightNet, check_num_classes
from ..weights import create_model

HEADS = ("lraspp", "raspp", "fcn")


class LRASPPHead(nn.Module):
    """Lite R-ASPP: a 1x1 conv-BN-ReLU branch on the final features, scaled per channel by a pooled branch (pool,
    1x1 conv, sigmoid: squeeze-excite without the bottleneck), classified, upsampled to the skip's resolution and
    added to a linear classifier of the skip (the paper's Figure 10).

    The pooling is global, as in torchvision's construction; the paper's 49x49 window with strides (16, 20) was
    sized for 1024x2048 Cityscapes inputs and already covers the whole stride-16 map of a 480x360 image.

    The classifier runs before the upsampling, not after: bilinear weights sum to one, so the two orders give the
    same logits (to float rounding), and upsampling ``num_classes`` channels instead of ``head_chs`` made the
    deployed LR-ASPP-128 0.90x as slow on ONNX Runtime at 1024x2048 (its Resize is costly per channel).
    """

    def __init__(self, low_chs: int, high_chs: int, num_classes: int, head_chs: int = 128) -> None:
        super().__init__()
        self.branch = ConvBnAct(high_chs, head_chs, 1, act=nn.ReLU)
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_chs, head_chs, 1, bias=False), nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low_chs, num_classes, 1)
        self.high_classifier = nn.Conv2d(head_chs, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.high_classifier(self.branch(high) * self.scale(high))
        return self.low_classifier(low) + F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)


class RASPPHead(nn.Module):
    """Reduced ASPP (MobileNetV2's mobile DeepLabv3): only ASPP's 1x1 branch and its image-pooling branch (pool,
    1x1 conv, ReLU, broadcast back), concatenated, projected by a 1x1 conv-BN-ReLU and classified; no skip.

    The pooled branch's conv has a bias in place of DeepLab's batch norm, which cannot normalise the one value per
    channel that a training batch of one image gives.
    """

    def __init__(self, high_chs: int, num_classes: int, head_chs: int = 256) -> None:
        super().__init__()
        self.branch = ConvBnAct(high_chs, head_chs, 1, act=nn.ReLU)
        self.pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_chs, head_chs, 1), nn.ReLU())
        self.project = ConvBnAct(2 * head_chs, head_chs, 1, act=nn.ReLU)
        self.classifier = nn.Conv2d(head_chs, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        pooled = self.pooled(high).expand(-1, -1, *high.shape[-2:])
        return self.classifier(self.project(torch.cat([self.branch(high), pooled], dim=1)))


class FCNHead(nn.Module):
    """The plain baseline: a 3x3 conv-BN-ReLU on the final features, dropout, a 1x1 classifier (FCN-32s style)."""

    def __init__(self, high_chs: int, num_classes: int, head_chs: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.block = ConvBnAct(high_chs, head_chs, 3, act=nn.ReLU)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(head_chs, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.block(high)))


class Segmenter(nn.Module):
    """Backbone stages -> head -> logits ``(B, C, H, W)`` at the input's size.

    The skip (LR-ASPP's only) is taken where the resolution first reaches the skip's stride: the output of the
    first block of stage ``low_index``, as torchvision's construction does (on MobileNetV3-Large, the first
    40-channel block). The backbone's classifier is dropped (its final 1x1 layer is kept: it makes the head's
    input), so parameter counts are those of the network that runs.
    """

    def __init__(self, backbone: LightNet, head: nn.Module, num_classes: int, low_index: int) -> None:
        super().__init__()
        check_num_classes(num_classes)
        backbone.head = nn.Identity()
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes
        self.low_index = low_index
        self.config: dict[str, Any] = {}

    @property
    def output_stride(self) -> int:
        return self.backbone.total_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Block by block rather than ``forward_stages``: the skip is the first block's output inside a stage.
        backbone = self.backbone
        backbone.check_input(x)
        size = x.shape[-2:]
        x = backbone.stem(x)
        low: torch.Tensor | None = None  # not the stem's output: holding it kept 32 MB alive at 2048x1024
        for index, stage in enumerate(backbone.stages):
            for position, block in enumerate(stage):
                x = block(x)
                if index == self.low_index and position == 0:
                    low = x
        logits = self.head(low, backbone.final(x))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def create_segmenter(backbone: str, num_classes: int, head: str = "lraspp", *, head_channels: int = 128,
                     output_stride: int = 16, reduced_tail: bool = False, low_stride: int = 8, in_chans: int = 3,
                     pretrained: bool | str | None = None, **backbone_overrides: Any) -> Segmenter:
    """A segmenter: ``head`` (one of ``HEADS``) on the registered ``backbone`` (any of ``lightnets.list_models()``).

    ``output_stride`` 32 keeps the backbone as it is; 16 or 8 dilate its later stages (``LightNet.dilate``).
    ``reduced_tail`` halves the last stage of a MobileNetV3 (the paper's RF2). ``low_stride`` picks LR-ASPP's skip:
    the last stage at that stride of the undilated backbone. ``pretrained`` starts the backbone from weights (as
    ``lightnets.create_model``); their mean and std (``lightnets.data_config``) are then the input's. The model's
    ``config`` holds every argument, enough to rebuild it for a checkpoint.
    """
    if head not in HEADS:
        raise LightnetsError(f"unknown segmentation head {head!r}; choose from {', '.join(HEADS)}")
    if not isinstance(head_channels, int) or head_channels < 1:
        raise LightnetsError(f"head_channels must be a positive integer, got {head_channels!r}")
    if reduced_tail:
        backbone_overrides["reduced_tail"] = True
    model = create_model(backbone, num_classes=1, in_chans=in_chans, pretrained=pretrained or False,
                         **backbone_overrides)
    if pretrained:
        backbone_overrides = dict(model.model_args)
    low_index = max((i for i, info in enumerate(model.feature_info) if info.stride == low_stride), default=None)
    if low_index is None:
        strides = sorted({info.stride for info in model.feature_info})
        raise LightnetsError(f"{backbone} has no stage at stride {low_stride} for the skip; its stages' strides "
                             f"are {strides}")
    if output_stride != model.total_stride:
        model.dilate(output_stride)
    if head == "lraspp":
        head_module: nn.Module = LRASPPHead(model.feature_info[low_index].channels, model.final_chs, num_classes,
                                            head_channels)
    elif head == "raspp":
        head_module = RASPPHead(model.final_chs, num_classes, head_channels)
    else:
        head_module = FCNHead(model.final_chs, num_classes, head_channels)
    init_weights(head_module)
    for name, module in head_module.named_modules():
        if name.endswith("classifier"):  # small logits at first: the loss starts near log(C), not several times it
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)
    segmenter = Segmenter(model, head_module, num_classes, low_index)
    segmenter.config = {"backbone": backbone, "num_classes": num_classes, "head": head,
                        "head_channels": head_channels, "output_stride": output_stride, "low_stride": low_stride,
                        "in_chans": in_chans, **backbone_overrides}
    return segmenter
