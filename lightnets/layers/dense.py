"""Dense connectivity: DenseNet-BC's bottleneck layer, PeleeNet's two-way layer and the block that concatenates them."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .conv import ConvBnAct


class BnActConv(nn.Sequential):
    """BatchNorm2d -> ReLU -> Conv2d (no bias): the pre-activation order DenseNet uses everywhere after its stem."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1) -> None:
        super().__init__(
            nn.BatchNorm2d(in_chs),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_chs, out_chs, kernel_size, padding=(kernel_size - 1) // 2, bias=False),
        )
        self.out_chs = out_chs


class DenseLayer(nn.Sequential):
    """DenseNet-BC's layer: a 1x1 bottleneck to ``bottleneck_chs`` then a 3x3 conv to ``growth_rate``, both
    pre-activated. It returns only its ``growth_rate`` new channels; ``DenseBlock`` appends them to its input.
    """

    def __init__(self, in_chs: int, growth_rate: int, bottleneck_chs: int) -> None:
        super().__init__(BnActConv(in_chs, bottleneck_chs, 1), BnActConv(bottleneck_chs, growth_rate, 3))
        self.out_chs = growth_rate


class TwoWayDenseLayer(nn.Module):
    """PeleeNet's 2-way dense layer: two branches of ``growth_rate / 2`` channels each, one 1x1 + 3x3 (a small
    receptive field) and one 1x1 + 3x3 + 3x3 (a 5x5 one, for larger objects), both through a 1x1 bottleneck of
    ``bottleneck_chs``. Convolutions are post-activated (conv-bn-relu) as in the paper's Caffe model.
    """

    def __init__(self, in_chs: int, growth_rate: int, bottleneck_chs: int) -> None:
        super().__init__()
        half = growth_rate // 2
        self.branch_3x3 = nn.Sequential(ConvBnAct(in_chs, bottleneck_chs, 1), ConvBnAct(bottleneck_chs, half, 3))
        self.branch_5x5 = nn.Sequential(
            ConvBnAct(in_chs, bottleneck_chs, 1), ConvBnAct(bottleneck_chs, half, 3), ConvBnAct(half, half, 3)
        )
        self.out_chs = 2 * half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch_3x3(x), self.branch_5x5(x)], 1)


class DenseBlock(nn.ModuleList):
    """``num_layers`` layers, each fed the block's input concatenated with every earlier layer's output.

    ``make_layer(in_chs)`` builds one layer that adds ``growth_rate`` channels, so the block ends with
    ``in_chs + num_layers * growth_rate`` channels (``out_chs``).
    """

    def __init__(self, in_chs: int, num_layers: int, growth_rate: int,
                 make_layer: Callable[[int], nn.Module]) -> None:
        super().__init__(make_layer(in_chs + i * growth_rate) for i in range(num_layers))
        self.out_chs = in_chs + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = torch.cat([x, layer(x)], 1)
        return x
