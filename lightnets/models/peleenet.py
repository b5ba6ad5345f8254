"""PeleeNet (Wang, Li and Ling 2018, Pelee): a DenseNet for mobile devices built from plain convolutions."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..layers import ConvBnAct, DenseBlock, TwoWayDenseLayer, init_weights
from .base import ClassifierHead, FeatureInfo, LightNet
from .registry import Published, register_model

# Per stage: dense layers, bottleneck width (in units of growth_rate / 2), transition output channels (Table 1).
PELEENET_STAGES = [(3, 1, 128), (4, 2, 256), (8, 4, 512), (6, 4, 704)]


class StemBlock(nn.Module):
    """PeleeNet's stem: a 3x3/2 conv, then a 1x1 + 3x3/2 branch beside a 2x2/2 max-pool branch, concatenated and
    fused by a 1x1 conv. It downsamples 4x cheaply while keeping more features than a strided conv alone
    (worth about a point of ImageNet top-1 in the paper).
    """

    def __init__(self, in_chs: int, out_chs: int = 32) -> None:
        super().__init__()
        self.conv = ConvBnAct(in_chs, out_chs, 3, 2)
        self.branch_conv = nn.Sequential(ConvBnAct(out_chs, out_chs // 2, 1), ConvBnAct(out_chs // 2, out_chs, 3, 2))
        # ceil_mode keeps the two branches the same size on odd inputs (the strided conv rounds up too).
        self.branch_pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.fuse = ConvBnAct(2 * out_chs, out_chs, 1)
        self.out_chs = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.branch_conv(x), self.branch_pool(x)], 1))


class PeleeNet(LightNet):
    """PeleeNet: stem block, four stages of 2-way dense layers (growth rate 32, (3, 4, 8, 6) layers, bottlenecks
    of 1, 2, 4, 4 x growth_rate / 2 channels), each closed by a 1x1 conv-bn-relu transition that keeps the
    width (no compression: 128, 256, 512, 704 channels). A 2x2 average pool between stages downsamples.
    At 224x224 the last map is 7x7x704: 2,802,248 parameters and 508M MACs, the paper's 2.8M and 508M.

    The source experiment trained two CIFAR-10 forms: this network as is (``peleenet``) on images upsampled
    from 32 to 224 (7x7x704 at the end), and ``use_stem=False`` (``peleenet_cifar``) on 32x32 images: the first
    dense block reads the image directly and the three pools bring it to 4x4x704.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, growth_rate: int = 32, use_stem: bool = True,
                 drop_rate: float = 0.0) -> None:
        super().__init__(num_classes, in_chans)
        self.stem = StemBlock(in_chans) if use_stem else nn.Identity()
        chs, stride = (self.stem.out_chs, 4) if use_stem else (in_chans, 1)
        half = growth_rate // 2
        stages, self.feature_info = [], []
        for i, (num_layers, bottleneck_width, out_chs) in enumerate(PELEENET_STAGES):
            parts: list[nn.Module] = []
            if i > 0:
                parts.append(nn.AvgPool2d(2, 2, ceil_mode=True))
                stride *= 2
            bottleneck_chs = half * bottleneck_width // 4 * 4  # rounded down to a multiple of 4, as the reference
            make_layer = partial(TwoWayDenseLayer, growth_rate=2 * half, bottleneck_chs=bottleneck_chs)
            parts.append(DenseBlock(chs, num_layers, 2 * half, make_layer))
            parts.append(ConvBnAct(parts[-1].out_chs, out_chs, 1))
            stages.append(nn.Sequential(*parts))
            chs = out_chs
            self.feature_info.append(FeatureInfo(chs, stride, f"stages.{i}"))
        self.stages = nn.ModuleList(stages)
        self.final = nn.Identity()
        self.head = ClassifierHead(chs, num_classes, drop_rate)
        init_weights(self)


# The source experiment's Keras builds, whose convolutions carry biases: (model, classes, trainable parameters
# printed). Ours are the same networks without those biases (BatchNorm follows every conv).
KERAS_TRAINABLE_PARAMS = [("peleenet", 1000, 2_807_112), ("peleenet", 10, 2_109_162), ("peleenet_cifar", 10, 2_094_298)]

register_model(
    "peleenet", PeleeNet, family="peleenet", input_size=224,
    summary="PeleeNet: stem block, 2-way dense layers, growth rate 32",
    published=Published("Wang et al. 2018, Pelee: A Real-Time Object Detection System on Mobile Devices", params=2.8e6,
                        macs=508e6, top1=72.6, reference_params=2_802_248,
                        reference_source="source experiment's Keras PeleeNet less its 4,864 conv biases"),
)
register_model(
    "peleenet_cifar", PeleeNet, family="peleenet", input_size=32, use_stem=False,
    summary="PeleeNet without the stem block for 32x32: dense blocks on the image, 4x4x704 at the end",
)
