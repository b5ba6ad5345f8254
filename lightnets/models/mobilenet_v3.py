"""MobileNetV3-Large and -Small (Howard et al. 2019): SE with hard-sigmoid, h-swish, efficient last stage."""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from ..layers import ConvBnAct, InvertedResidual, get_act, init_weights, make_divisible
from .base import ClassifierHead, LightNet, build_stages, check_multiplier, cifar_strides
from .registry import Published, register_model


class BlockSpec(NamedTuple):
    """One bneck row of the paper's Tables 1 and 2."""

    kernel: int
    expand: int
    out: int
    se: bool
    act: str
    stride: int


_B = BlockSpec
LARGE = [
    _B(3, 16, 16, False, "relu", 1),
    _B(3, 64, 24, False, "relu", 2),
    _B(3, 72, 24, False, "relu", 1),
    _B(5, 72, 40, True, "relu", 2),
    _B(5, 120, 40, True, "relu", 1),
    _B(5, 120, 40, True, "relu", 1),
    _B(3, 240, 80, False, "hswish", 2),
    _B(3, 200, 80, False, "hswish", 1),
    _B(3, 184, 80, False, "hswish", 1),
    _B(3, 184, 80, False, "hswish", 1),
    _B(3, 480, 112, True, "hswish", 1),
    _B(3, 672, 112, True, "hswish", 1),
    _B(5, 672, 160, True, "hswish", 2),
    _B(5, 960, 160, True, "hswish", 1),
    _B(5, 960, 160, True, "hswish", 1),
]
SMALL = [
    _B(3, 16, 16, True, "relu", 2),
    _B(3, 72, 24, False, "relu", 2),
    _B(3, 88, 24, False, "relu", 1),
    _B(5, 96, 40, True, "hswish", 2),
    _B(5, 240, 40, True, "hswish", 1),
    _B(5, 240, 40, True, "hswish", 1),
    _B(5, 120, 48, True, "hswish", 1),
    _B(5, 144, 48, True, "hswish", 1),
    _B(5, 288, 96, True, "hswish", 2),
    _B(5, 576, 96, True, "hswish", 1),
    _B(5, 576, 96, True, "hswish", 1),
]
CONFIGS = {"large": (LARGE, 1280), "small": (SMALL, 1024)}


def reduce_tail(specs: list[BlockSpec]) -> list[BlockSpec]:
    """The paper's segmentation backbone (Section 6.4, "RF2"): the blocks from the last downsampling on get half
    their output and expansion channels (the first keeps its expansion, which reads the full-width input), so the
    final 1x1 layer is halved too."""
    last = max(i for i, spec in enumerate(specs) if spec.stride == 2)
    return [spec if i < last else spec._replace(out=spec.out // 2,
                                                expand=spec.expand if i == last else spec.expand // 2)
            for i, spec in enumerate(specs)]


class MobileNetV3(LightNet):
    """MobileNetV3 ``variant`` 'large' or 'small' with width multiplier ``width_mult``.

    Blocks are the paper's bneck tables; SE squeezes to ``make_divisible(expand / 4)`` channels and
    gates with a hard sigmoid. The efficient last stage pools the 1x1-expanded (6x) features to 1x1
    before the 1280 (Large) / 1024 (Small) wide h-swish layer, which the width multiplier leaves
    unscaled, as in the paper's reference (Large 0.75: 4.0M parameters).

    ``cifar=True`` (the ``_cifar`` variants, for 32x32 inputs): the stem conv and the first stride-2
    bneck have stride 1, so the total stride is 8 (4x4 final map). Nothing else changes.

    ``bn_eps`` is BatchNorm's epsilon (1e-5 as timm's weights; torchvision's and TF's use 1e-3).
    ``tf_padding=True`` pads the strided convs as TensorFlow's "SAME" (extra pixel bottom/right), which
    weights ported from TensorFlow need (timm's ``tf_mobilenetv3_*``).

    For segmentation (the paper's Section 6.4): ``reduced_tail=True`` halves the last stage's channels and the
    1280/1024 head layer; ``dilated=True`` runs the last stage at stride 16 with atrous convolutions
    (``LightNet.dilate``), as torchvision's ``mobilenet_v3_large(dilated=True)``.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, variant: str = "large",
                 width_mult: float = 1.0, drop_rate: float = 0.2, drop_path_rate: float = 0.0,
                 cifar: bool = False, bn_eps: float = 1e-5, tf_padding: bool = False, reduced_tail: bool = False,
                 dilated: bool = False) -> None:
        super().__init__(num_classes, in_chans)
        check_multiplier("width_mult", width_mult)
        if variant not in CONFIGS:
            raise ValueError(f"variant must be one of {sorted(CONFIGS)}, got {variant!r}")
        specs, head_chs = CONFIGS[variant]
        if reduced_tail:
            specs, head_chs = reduce_tail(specs), head_chs // 2

        stem_chs = make_divisible(16 * width_mult)
        stem_stride = 1 if cifar else 2
        self.stem = ConvBnAct(in_chans, stem_chs, 3, stem_stride, act=nn.Hardswish, bn_eps=bn_eps,
                              tf_padding=tf_padding)
        blocks = []
        in_chs, paper_in_chs = stem_chs, 16
        strides = cifar_strides([spec.stride for spec in specs], cifar)
        for i, (spec, stride) in enumerate(zip(specs, strides, strict=True)):
            expand = make_divisible(in_chs * spec.expand / paper_in_chs)
            out = make_divisible(spec.out * width_mult)
            block = InvertedResidual(
                in_chs, expand, out, spec.kernel, stride, act=get_act(spec.act),
                se_chs=make_divisible(expand // 4) if spec.se else 0, se_act=nn.ReLU, se_gate=nn.Hardsigmoid,
                drop_path=drop_path_rate * i / len(specs), bn_eps=bn_eps, tf_padding=tf_padding,
            )
            blocks.append((block, stride, spec.stride == 2))
            in_chs, paper_in_chs = out, spec.out
        self.stages, self.feature_info = build_stages(blocks, stem_chs, stem_stride)
        final_chs = make_divisible(specs[-1].out * 6 * width_mult)
        self.final = ConvBnAct(in_chs, final_chs, 1, act=nn.Hardswish, bn_eps=bn_eps)
        self.head = ClassifierHead(final_chs, num_classes, drop_rate, hidden_chs=head_chs, hidden_act=nn.Hardswish)
        init_weights(self)
        if dilated:
            self.dilate(self.total_stride // 2)


_PAPER = "Howard et al. 2019, Searching for MobileNetV3, Tables 3 and 4"
_TV = "torchvision mobilenet_v3_{}"
for _variant, _suffix, _width, _params, _macs, _top1, _exact in [
    ("large", "100", 1.0, 5.4e6, 219e6, 75.2, 5_483_032),
    ("large", "075", 0.75, 4.0e6, 155e6, 73.3, None),
    ("small", "100", 1.0, 2.5e6, 56e6, 67.4, 2_542_856),
    ("small", "075", 0.75, 2.0e6, 44e6, 65.4, None),
]:
    register_model(
        f"mobilenetv3_{_variant}_{_suffix}", MobileNetV3, family="mobilenet_v3", input_size=224,
        variant=_variant, width_mult=_width, summary=f"MobileNetV3-{_variant.title()} {_width}",
        published=Published(_PAPER, params=_params, macs=_macs, top1=_top1, reference_params=_exact,
                             reference_source=_TV.format(_variant) if _exact else None),
    )
    register_model(
        f"mobilenetv3_{_variant}_{_suffix}_cifar", MobileNetV3, family="mobilenet_v3", input_size=32,
        variant=_variant, width_mult=_width, cifar=True,
        summary=f"MobileNetV3-{_variant.title()} {_width} for 32x32: stem and first downsampling at stride 1",
    )
