"""MobileNetV1 (Howard et al. 2017): depthwise separable convolutions, width and resolution multipliers."""

from __future__ import annotations

from torch import nn

from ..layers import ConvBnAct, DepthwiseSeparable, get_act, init_weights
from .base import ClassifierHead, LightNet, build_stages, check_multiplier, cifar_strides
from .registry import Published, register_model

# (output channels, stride) of the 13 depthwise separable layers, the paper's Table 1.
MOBILENET_V1_LAYERS = [
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
]


class MobileNetV1(LightNet):
    """MobileNetV1 with width multiplier ``width_mult`` (alpha); the resolution multiplier is the input size.

    Widths are ``max(int(c * alpha), 8)``, the rule of the TF-slim reference, whose parameter counts
    (4.24M / 2.59M / 1.34M / 0.47M for alpha 1 / 0.75 / 0.5 / 0.25) we match.

    ``cifar=True`` (the ``_cifar`` variants, for 32x32 inputs): the stem conv has stride 1 instead
    of 2 and the first stride-2 depthwise layer (64 -> 128) has stride 1, so the total stride is 8
    and a 32x32 image ends as a 4x4 map. Everything else is as in the paper.

    ``act`` names the activation after every conv: "relu" as in the paper, or "relu6" as TF-slim's reference
    and timm's ``mobilenetv1_100`` (whose weights need it; their BN epsilon is our 1e-5 and they have no
    head conv either).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 drop_rate: float = 0.0, cifar: bool = False, act: str = "relu") -> None:
        super().__init__(num_classes, in_chans)
        check_multiplier("width_mult", width_mult)
        act_layer = get_act(act)

        def width(c: int) -> int:
            return max(int(c * width_mult), 8)

        stem_stride = 1 if cifar else 2
        self.stem = ConvBnAct(in_chans, width(32), 3, stem_stride, act=act_layer)
        blocks = []
        in_chs = width(32)
        strides = cifar_strides([stride for _, stride in MOBILENET_V1_LAYERS], cifar)
        for (out, stride), actual in zip(MOBILENET_V1_LAYERS, strides, strict=True):
            blocks.append((DepthwiseSeparable(in_chs, width(out), actual, act=act_layer), actual, stride == 2))
            in_chs = width(out)
        self.stages, self.feature_info = build_stages(blocks, width(32), stem_stride)
        self.final = nn.Identity()
        self.head = ClassifierHead(in_chs, num_classes, drop_rate)
        init_weights(self)


_PAPER = "Howard et al. 2017, MobileNets, Tables 6 and 7"
_TF_SLIM = "TF-slim mobilenet_v1 reference (README table)"

for _suffix, _alpha, _params, _macs, _top1, _exact in [
    ("100", 1.0, 4.2e6, 569e6, 70.6, 4.24e6),
    ("075", 0.75, 2.6e6, 325e6, 68.4, 2.59e6),
    ("050", 0.5, 1.3e6, 149e6, 63.7, 1.34e6),
    ("025", 0.25, 0.5e6, 41e6, 50.6, 0.47e6),
]:
    _macs_at = {192: 418e6, 160: 290e6, 128: 186e6} if _alpha == 1.0 else {}
    register_model(
        f"mobilenetv1_{_suffix}", MobileNetV1, family="mobilenet_v1", input_size=224, width_mult=_alpha,
        summary=f"MobileNetV1, width multiplier {_alpha}",
        published=Published(_PAPER, params=_params, macs=_macs, top1=_top1, reference_params=_exact,
                            reference_source=_TF_SLIM, macs_at=_macs_at),
    )
    register_model(
        f"mobilenetv1_{_suffix}_cifar", MobileNetV1, family="mobilenet_v1", input_size=32, width_mult=_alpha,
        cifar=True, summary=f"MobileNetV1 {_alpha} for 32x32: stem and first downsampling at stride 1",
    )
