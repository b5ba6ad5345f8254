"""VoVNet's one-shot aggregation (OSA) module."""

from __future__ import annotations

import torch
from torch import nn

from .conv import ConvBnAct


class OSAModule(nn.Module):
    """A chain of ``num_layers`` 3x3 conv-bn-relu layers of ``stage_chs`` channels whose outputs, together with
    the module's input, are concatenated once at the end and fused by a 1x1 conv-bn-relu to ``out_chs``.

    Aggregating once (instead of at every layer, as a dense block does) keeps each layer's input and output
    widths equal and the memory traffic low, which is what makes VoVNet fast on GPUs (Lee et al. 2019).
    """

    def __init__(self, in_chs: int, stage_chs: int, out_chs: int, num_layers: int = 5) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            ConvBnAct(in_chs if i == 0 else stage_chs, stage_chs, 3) for i in range(num_layers)
        )
        self.aggregate = ConvBnAct(in_chs + num_layers * stage_chs, out_chs, 1)
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features[-1]))
        return self.aggregate(torch.cat(features, 1))
