"""Squeeze-excite, stochastic depth and the inverted residual (MBConv) block."""

from __future__ import annotations

import torch
from torch import nn

from .conv import ActFactory, ConvBnAct


class SqueezeExcite(nn.Module):
    """Channel attention: global pool, 1x1 reduce, activation, 1x1 expand, gate (Hu et al. 2018).

    MobileNetV3 gates with a hard sigmoid and reduces to 1/4 of the expanded width; EfficientNet
    gates with a sigmoid and reduces to 1/4 of the block's input width.
    """

    def __init__(self, chs: int, squeeze_chs: int, act: ActFactory = nn.ReLU,
                 gate: ActFactory = nn.Sigmoid) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(chs, squeeze_chs, 1)
        self.act = act() if act is not None else nn.Identity()
        self.expand = nn.Conv2d(squeeze_chs, chs, 1)
        self.gate = gate() if gate is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.gate(self.expand(self.act(self.reduce(scale))))
        return x * scale


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample with probability ``p`` while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 and EfficientNet's MBConv: expand 1x1, depthwise k x k, optional SE, project 1x1.

    A residual connection (with stochastic depth) is used when stride is 1 and widths match.
    With ``expand_chs == in_chs`` the expansion conv is left out, as in the first block of each paper.
    ``tf_padding`` pads the strided depthwise conv as TensorFlow's "SAME" (see ``Conv2dTFSame``).
    """

    def __init__(
        self,
        in_chs: int,
        expand_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        act: ActFactory = nn.ReLU,
        se_chs: int = 0,
        se_act: ActFactory = nn.ReLU,
        se_gate: ActFactory = nn.Hardsigmoid,
        drop_path: float = 0.0,
        bn_eps: float = 1e-5,
        tf_padding: bool = False,
    ) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_chs == out_chs
        self.expand = (
            ConvBnAct(in_chs, expand_chs, 1, act=act, bn_eps=bn_eps) if expand_chs != in_chs else nn.Identity()
        )
        self.depthwise = ConvBnAct(expand_chs, expand_chs, kernel_size, stride, groups=expand_chs, act=act,
                                   bn_eps=bn_eps, tf_padding=tf_padding)
        self.se = SqueezeExcite(expand_chs, se_chs, se_act, se_gate) if se_chs > 0 else nn.Identity()
        self.project = ConvBnAct(expand_chs, out_chs, 1, act=None, bn_eps=bn_eps)
        self.drop_path = DropPath(drop_path) if self.use_residual and drop_path > 0 else nn.Identity()
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        if self.use_residual:
            out = self.drop_path(out)
            out += x  # in place, as torchvision's: the projection's batch-norm output is not needed for backward
        return out
