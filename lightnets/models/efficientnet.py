"""EfficientNet-B0..B7 (Tan and Le 2019): MBConv with SE on a searched base, scaled by compound coefficients."""

from __future__ import annotations

import math
from typing import NamedTuple

from torch import nn

from ..layers import ConvBnAct, InvertedResidual, init_weights, make_divisible
from .base import ClassifierHead, LightNet, build_stages, check_multiplier, cifar_strides
from .registry import Published, register_model


class StageSpec(NamedTuple):
    """One row of the paper's Table 1 (EfficientNet-B0)."""

    expand_ratio: int
    kernel: int
    stride: int
    out: int
    layers: int


B0_STAGES = [
    StageSpec(1, 3, 1, 16, 1),
    StageSpec(6, 3, 2, 24, 2),
    StageSpec(6, 5, 2, 40, 2),
    StageSpec(6, 3, 2, 80, 3),
    StageSpec(6, 5, 1, 112, 3),
    StageSpec(6, 5, 2, 192, 4),
    StageSpec(6, 3, 1, 320, 1),
]

# The paper's published members: (width, depth, resolution, dropout).
EFFICIENTNET_TABLE = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}


def compound_coefficients(phi: float, alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15,
                          base_resolution: int = 224) -> tuple[float, float, int]:
    """Width, depth and input size for compound coefficient ``phi``: ``beta**phi``, ``alpha**phi``,
    ``base * gamma**phi``. With alpha * beta^2 * gamma^2 ~ 2, FLOPs grow by about ``2**phi``.

    The published B1..B7 were rounded by hand from these, so they differ slightly (see ``EFFICIENTNET_TABLE``).
    """
    return beta**phi, alpha**phi, int(round(base_resolution * gamma**phi))


class EfficientNet(LightNet):
    """EfficientNet with width and depth multipliers (the resolution is the input size).

    Widths are ``make_divisible(c * width_mult, 8)``, depths ``ceil(layers * depth_mult)``, SE squeezes
    to a quarter of the block's *input* width with a sigmoid gate, activations are SiLU (swish), and
    stochastic depth grows linearly to ``drop_path_rate`` over the blocks, as in the reference.

    ``cifar=True`` (the ``_cifar`` variants, for 32x32 inputs): the stem conv and the first stride-2
    stage (16 -> 24) have stride 1, so the total stride is 8 (4x4 final map). Nothing else changes.

    ``lite=True`` builds EfficientNet-Lite (TF's ``efficientnet/lite``, for mobile CPUs, GPUs and EdgeTPUs):
    no squeeze-excite (poorly supported by some mobile accelerators), ReLU6 instead of swish (easier
    post-training quantization), and neither the stem (32) and head (1280) widths nor the first and last
    stages' repeats scaled (keeping the larger members small and fast), as TF's lite builder and timm do.

    ``bn_eps`` is BatchNorm's epsilon: 1e-3 as TF's weights (timm's ``tf_*``); timm's other weights and
    torchvision's ``efficientnet_b*`` need 1e-5. ``tf_padding=True`` pads the strided convs as TensorFlow's
    "SAME" (extra pixel bottom/right), which weights ported from TensorFlow need (timm's ``tf_efficientnet_*``).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 depth_mult: float = 1.0, drop_rate: float = 0.2, drop_path_rate: float = 0.2,
                 cifar: bool = False, lite: bool = False, bn_eps: float = 1e-3, tf_padding: bool = False) -> None:
        super().__init__(num_classes, in_chans)
        check_multiplier("width_mult", width_mult)
        check_multiplier("depth_mult", depth_mult)
        act = nn.ReLU6 if lite else nn.SiLU

        stem_chs = 32 if lite else make_divisible(32 * width_mult)
        stem_stride = 1 if cifar else 2
        self.stem = ConvBnAct(in_chans, stem_chs, 3, stem_stride, act=act, bn_eps=bn_eps, tf_padding=tf_padding)
        last = len(B0_STAGES) - 1
        depths = [s.layers if lite and i in (0, last) else math.ceil(s.layers * depth_mult)
                  for i, s in enumerate(B0_STAGES)]
        total_blocks = sum(depths)
        blocks = []
        in_chs = stem_chs
        paper_strides = [spec.stride if j == 0 else 1 for spec, depth in zip(B0_STAGES, depths, strict=True)
                         for j in range(depth)]
        strides = iter(cifar_strides(paper_strides, cifar))
        for spec, depth in zip(B0_STAGES, depths, strict=True):
            out = make_divisible(spec.out * width_mult)
            for j in range(depth):
                stride = next(strides)
                block = InvertedResidual(
                    in_chs, in_chs * spec.expand_ratio, out, spec.kernel, stride, act=act,
                    se_chs=0 if lite else max(1, in_chs // 4), se_act=nn.SiLU, se_gate=nn.Sigmoid,
                    drop_path=drop_path_rate * len(blocks) / total_blocks, bn_eps=bn_eps, tf_padding=tf_padding,
                )
                blocks.append((block, stride, j == 0 and spec.stride == 2))
                in_chs = out
        self.stages, self.feature_info = build_stages(blocks, stem_chs, stem_stride)
        final_chs = 1280 if lite else make_divisible(1280 * width_mult)
        self.final = ConvBnAct(in_chs, final_chs, 1, act=act, bn_eps=bn_eps)
        self.head = ClassifierHead(final_chs, num_classes, drop_rate)
        init_weights(self)
        for m in self.head.modules():  # the reference initialises the classifier uniformly
            if isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)


def efficientnet(phi: float, num_classes: int = 1000, in_chans: int = 3, alpha: float = 1.2, beta: float = 1.1,
                 gamma: float = 1.15, drop_rate: float = 0.2, cifar: bool = False) -> tuple[EfficientNet, int]:
    """Any member of the family by compound scaling: returns the model and its input size."""
    width, depth, resolution = compound_coefficients(phi, alpha, beta, gamma)
    model = EfficientNet(num_classes, in_chans, width_mult=width, depth_mult=depth, drop_rate=drop_rate,
                         cifar=cifar)
    return model, resolution


_PAPER = "Tan and Le 2019, EfficientNet, Table 2"
for _name, _params, _macs, _top1, _exact in [
    ("b0", 5.3e6, 0.39e9, 77.1, 5_288_548),
    ("b1", 7.8e6, 0.70e9, 79.1, 7_794_184),
    ("b2", 9.2e6, 1.0e9, 80.1, 9_109_994),
    ("b3", 12e6, 1.8e9, 81.6, 12_233_232),
    ("b4", 19e6, 4.2e9, 82.9, 19_341_616),
    ("b5", 30e6, 9.9e9, 83.6, 30_389_784),
    ("b6", 43e6, 19e9, 84.0, 43_040_704),
    ("b7", 66e6, 37e9, 84.3, 66_347_960),
]:
    _w, _d, _res, _drop = EFFICIENTNET_TABLE[_name]
    register_model(
        f"efficientnet_{_name}", EfficientNet, family="efficientnet", input_size=_res, width_mult=_w,
        depth_mult=_d, drop_rate=_drop, summary=f"EfficientNet-{_name.upper()} (w={_w}, d={_d}, r={_res})",
        published=Published(_PAPER, params=_params, macs=_macs, top1=_top1, reference_params=_exact,
                            reference_source=f"torchvision efficientnet_{_name}"),
    )
    register_model(
        f"efficientnet_{_name}_cifar", EfficientNet, family="efficientnet", input_size=32, width_mult=_w,
        depth_mult=_d, drop_rate=_drop, cifar=True,
        summary=f"EfficientNet-{_name.upper()} for 32x32: stem and first downsampling at stride 1",
    )

# EfficientNet-Lite (TF's efficientnet/lite builder): (width, depth, resolution, dropout).
EFFICIENTNET_LITE_TABLE = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}

# The README's MAdds (407M, 631M, 899M, 1.44B, 2.64B at the table's resolutions) come from TF's own counter and
# are 3-6% above ours (385M, 600M, 860M, 1.38B, 2.55B by the benchmark protocol), more than the 5% the tests allow
# for lite0, so they are kept here rather than in ``Published.macs``.
LITE_README_MADDS = {"lite0": 407e6, "lite1": 631e6, "lite2": 899e6, "lite3": 1.44e9, "lite4": 2.64e9}

_LITE = "TF tpu/models/official/efficientnet/lite README (params, FP32 top-1)"
for _name, _params, _top1, _exact in [
    ("lite0", 4.7e6, 75.1, 4_652_008),
    ("lite1", 5.4e6, 76.7, 5_416_680),
    ("lite2", 6.1e6, 77.6, 6_092_072),
    ("lite3", 8.2e6, 79.8, 8_197_096),
    ("lite4", 13.0e6, 81.5, 13_006_568),
]:
    _w, _d, _res, _drop = EFFICIENTNET_LITE_TABLE[_name]
    _title = f"EfficientNet-{_name.title()}"
    register_model(
        f"efficientnet_{_name}", EfficientNet, family="efficientnet", input_size=_res, width_mult=_w,
        depth_mult=_d, drop_rate=_drop, lite=True,
        summary=f"{_title} (w={_w}, d={_d}, r={_res}): no SE, ReLU6, stem and head fixed",
        published=Published(_LITE, params=_params, top1=_top1, reference_params=_exact,
                            reference_source=f"timm efficientnet_{_name}"),
    )
    register_model(
        f"efficientnet_{_name}_cifar", EfficientNet, family="efficientnet", input_size=32, width_mult=_w,
        depth_mult=_d, drop_rate=_drop, lite=True, cifar=True,
        summary=f"{_title} for 32x32: stem and first downsampling at stride 1",
    )
