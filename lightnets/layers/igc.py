"""Channel local convolutions (Zhang 2018, clcNet): interlaced grouped convolution and the CLC block.

A grouped convolution computes each output channel from a subset of the input channels. Stacking two grouped
convolutions only approximates a full convolution if every output still depends on every input: the block
has a *full channel receptive field* (FCRF). Interlacing the first convolution's outputs, so that neighbouring
channels come from different groups, lets the second, grouped, convolution reach all groups cheaply.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import LightnetsError
from .conv import ConvBnAct


class ChannelInterlace(nn.Module):
    """Reorder channels so that channel ``j * groups + i`` is channel ``j`` of group ``i``.

    After a convolution with ``groups`` groups, consecutive channels then come from different groups
    (ShuffleNet calls this a channel shuffle). Written with view/transpose so it exports to ONNX.
    """

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class InterlacedGroupConv(nn.Sequential):
    """IGC: a ``kernel_size`` convolution with ``groups`` groups (conv-bn, no activation) whose output channels
    are interlaced, so each run of ``groups`` consecutive outputs spans every input group.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            ConvBnAct(in_chs, out_chs, kernel_size, stride, groups=groups, act=None),
            ChannelInterlace(groups),
        )
        self.out_chs = out_chs


def channel_receptive_field(channels: int, g1: int, g2: int) -> int:
    """How many of a CLC block's ``channels`` input channels each of its outputs depends on.

    The IGC gives each intermediate channel ``channels / g1`` inputs; a GC group reads ``channels / g2``
    consecutive interlaced channels, which come from ``min(channels / g2, g1)`` different IGC groups.
    """
    return min(channels // g2, g1) * (channels // g1)


def _check_groups(channels: int, **groups: int) -> None:
    for name, value in groups.items():
        if not isinstance(value, int) or value < 1 or channels % value:
            raise LightnetsError(f"{name} must be a positive divisor of the block's {channels} channels, got {value!r}")


def check_full_channel_receptive_field(channels: int, g1: int, g2: int) -> None:
    """Accept a CLC block (IGC with ``g1`` groups then GC with ``g2`` groups on ``channels`` intermediate
    channels) only if it has a full channel receptive field, the paper's rule ``g1 * g2 <= channels``.
    """
    _check_groups(channels, g1=g1, g2=g2)
    if g1 * g2 > channels:
        raise LightnetsError(
            f"CLC block with g1={g1}, g2={g2} on {channels} channels lacks a full channel receptive field: "
            f"g1 * g2 = {g1 * g2} > {channels}, so each output sees only "
            f"{channel_receptive_field(channels, g1, g2)} of the {channels} input channels; "
            f"choose g1 * g2 <= {channels}"
        )


class CLCBlock(nn.Sequential):
    """clcNet's block, as in the authors' Torch model: a 3x3 IGC with ``g1`` groups (conv-bn, interlaced,
    carrying the stride) then a 1x1 grouped convolution with ``g2`` groups (conv-bn-relu).

    It replaces MobileNet's depthwise + pointwise pair: ``g1 = in_chs`` is a depthwise conv, ``g2 = 1`` a
    full pointwise one. ``require_fcrf=False`` admits blocks that break the ``g1 * g2 <= in_chs`` rule, for
    experiments like the paper's that measure what a missing full channel receptive field costs.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, g1: int = 1, g2: int = 1,
                 require_fcrf: bool = True) -> None:
        _check_groups(in_chs, g1=g1, g2=g2)
        _check_groups(out_chs, g2=g2)
        if require_fcrf:
            check_full_channel_receptive_field(in_chs, g1, g2)
        super().__init__(
            InterlacedGroupConv(in_chs, in_chs, 3, stride, groups=g1),
            ConvBnAct(in_chs, out_chs, 1, groups=g2),
        )
        self.out_chs = out_chs
