"""clcNet (Zhang 2018): MobileNet's layout with channel local convolution (CLC) blocks."""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from ..errors import LightnetsError
from ..layers import CLCBlock, ConvBnAct, init_weights
from .base import ClassifierHead, LightNet, build_stages, cifar_strides
from .registry import Published, register_model


class CLCSpec(NamedTuple):
    """One CLC block: widths, stride, IGC groups ``g1`` and GC groups ``g2``."""

    in_chs: int
    out_chs: int
    stride: int
    g1: int
    g2: int


def clcnet_layout(depths: tuple[int, int, int, int]) -> list[CLCSpec]:
    """The CLC blocks of clcNet with ``depths = (a, b, c, d)`` extra blocks at 128, 256, 512 and 1024 channels.

    As in the authors' clcnet.lua: a 32 -> 64 block, then per stage one stride-2 block that doubles the width
    and ``a``..``d`` blocks that keep it. Every IGC has groups of two channels (``g1 = in_chs / 2``) and every GC
    two groups (``g2 = 2``), so ``g1 * g2 = in_chs``: the cheapest setting that keeps a full channel receptive field.
    """
    if len(depths) != 4 or any(not isinstance(n, int) or n < 0 for n in depths):
        raise LightnetsError(f"depths must be four integers >= 0 (a, b, c, d), got {depths!r}")
    specs = [CLCSpec(32, 64, 1, 16, 2)]
    in_chs = 64
    for out_chs, extra in zip((128, 256, 512, 1024), depths, strict=True):
        specs.append(CLCSpec(in_chs, out_chs, 2, in_chs // 2, 2))
        specs += [CLCSpec(out_chs, out_chs, 1, out_chs // 2, 2)] * extra
        in_chs = out_chs
    return specs


class ClcNet(LightNet):
    """clcNet with layer configuration ``depths = (a, b, c, d)``: clcNet-A is (1, 1, 5, 2), clcNet-B (1, 1, 7, 3).

    A 3x3/2 conv-bn-relu stem (32 channels), the CLC blocks of ``clcnet_layout`` (each a 3x3 interlaced grouped
    conv with ``g1`` groups, then a 1x1 grouped conv with ``g2`` groups), global pooling and a linear classifier.
    Parameters counted by hand from the authors' Torch model definition, layer by layer (convolutions without
    bias, BatchNorm's weight and bias, the classifier's weight and bias): 3,253,640 for A and 4,085,128 for B,
    which this class reproduces exactly.

    ``cifar=True`` (the ``_cifar`` variants, for 32x32 inputs), as for MobileNetV1: the stem conv and the first
    stride-2 block (64 -> 128) have stride 1, so the total stride is 8 and the last map is 4x4.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, depths: tuple[int, int, int, int] = (1, 1, 5, 2),
                 drop_rate: float = 0.0, cifar: bool = False) -> None:
        super().__init__(num_classes, in_chans)
        specs = clcnet_layout(tuple(depths))
        stem_stride = 1 if cifar else 2
        self.stem = ConvBnAct(in_chans, specs[0].in_chs, 3, stem_stride)
        blocks = []
        for spec, stride in zip(specs, cifar_strides([s.stride for s in specs], cifar), strict=True):
            block = CLCBlock(spec.in_chs, spec.out_chs, stride, spec.g1, spec.g2)
            blocks.append((block, stride, spec.stride == 2))
        self.stages, self.feature_info = build_stages(blocks, specs[0].in_chs, stem_stride)
        self.final = nn.Identity()
        self.head = ClassifierHead(specs[-1].out_chs, num_classes, drop_rate)
        init_weights(self)


_SOURCE = ("Zhang 2018, clcNet (CVPR); layer configuration and ImageNet top-1 from the authors' clcnet.torch "
           "README, parameters counted from its models/clcnet.lua")
for _suffix, _depths, _top1, _exact in [("a", (1, 1, 5, 2), 70.4, 3_253_640), ("b", (1, 1, 7, 3), 71.6, 4_085_128)]:
    register_model(
        f"clcnet_{_suffix}", ClcNet, family="clcnet", input_size=224, depths=_depths,
        summary=f"clcNet-{_suffix.upper()}, layer configuration (a, b, c, d) = {_depths}",
        published=Published(_SOURCE, top1=_top1, reference_params=_exact,
                             reference_source="authors' clcnet.torch models/clcnet.lua, counted by hand"),
    )
    register_model(
        f"clcnet_{_suffix}_cifar", ClcNet, family="clcnet", input_size=32, depths=_depths, cifar=True,
        summary=f"clcNet-{_suffix.upper()} for 32x32: stem and first downsampling block at stride 1",
    )
