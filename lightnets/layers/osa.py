"""VoVNet's one-shot aggregation (OSA) module, and VoVNetV2's effective squeeze-excite (eSE)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import LightnetsError
from .conv import ConvBnAct


class EffectiveSqueezeExcite(nn.Module):
    """eSE (Lee and Park 2020, CenterMask): global average pool, one 1x1 conv with bias keeping the width (``fc``),
    a hard-sigmoid gate (``relu6(x + 3) / 6``), and the input scaled by it.

    Squeeze-excite's two convs with a reduction between them lose information; one full-width conv does not.
    """

    def __init__(self, chs: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(chs, chs, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc(x.mean((2, 3), keepdim=True)))


class OSAModule(nn.Module):
    """A chain of ``num_layers`` 3x3 conv-bn-relu layers of ``stage_chs`` channels whose outputs, together with
    the module's input, are concatenated once at the end and fused by a 1x1 conv-bn-relu to ``out_chs``.

    Aggregating once (instead of at every layer, as a dense block does) keeps each layer's input and output
    widths equal and the memory traffic low, which is what makes VoVNet fast on GPUs (Lee et al. 2019).

    VoVNetV2's additions, both off by default: ``ese`` gates the aggregated output with an effective
    squeeze-excite (``self.ese``), and ``residual`` then adds the module's input (widths must match).
    """

    def __init__(self, in_chs: int, stage_chs: int, out_chs: int, num_layers: int = 5, ese: bool = False,
                 residual: bool = False) -> None:
        super().__init__()
        if residual and in_chs != out_chs:
            raise LightnetsError(f"a residual OSA module needs in_chs == out_chs, got {in_chs} and {out_chs}")
        self.layers = nn.ModuleList(
            ConvBnAct(in_chs if i == 0 else stage_chs, stage_chs, 3) for i in range(num_layers)
        )
        self.aggregate = ConvBnAct(in_chs + num_layers * stage_chs, out_chs, 1)
        self.ese = EffectiveSqueezeExcite(out_chs) if ese else nn.Identity()
        self.residual = residual
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features[-1]))
        out = self.ese(self.aggregate(torch.cat(features, 1)))
        return out + x if self.residual else out
