"""DenseNet-BC (Huang et al. 2017): dense blocks of bottleneck layers joined by compressing transitions."""

from __future__ import annotations

from functools import partial

from torch import nn

from ..errors import LightnetsError
from ..layers import BnActConv, ConvBnAct, DenseBlock, DenseLayer, init_weights
from .base import ClassifierHead, FeatureInfo, LightNet
from .registry import Published, register_model


class DenseTransition(nn.Sequential):
    """Between two dense blocks: BN-ReLU-1x1 conv to ``out_chs`` (the compression), then a 2x2 average pool
    that keeps an odd last row and column (``ceil_mode``) unless ``pool_ceil=False``."""

    def __init__(self, in_chs: int, out_chs: int, pool_ceil: bool = True) -> None:
        super().__init__(BnActConv(in_chs, out_chs, 1), nn.AvgPool2d(2, ceil_mode=pool_ceil))
        self.out_chs = out_chs


class DenseNet(LightNet):
    """DenseNet-BC with growth rate ``growth_rate`` and ``block_config`` layers per dense block.

    Each layer is BN-ReLU-1x1 conv to ``bottleneck_chs`` channels (by default ``4 * growth_rate``, as in
    DenseNet-BC), then BN-ReLU-3x3 conv to ``growth_rate``; each transition halves the channels
    (``compression``) and the resolution. The ImageNet stem is a 7x7/2
    conv-bn-relu with ``stem_chs`` outputs and a 3x3/2 max-pool; torchvision's densenet121/169/201 are built
    exactly the same way (7,978,856 / 14,149,480 / 20,013,928 parameters).

    ``cifar=True`` (for 32x32 inputs): the stem is a single 3x3 conv at stride 1 with no normalisation and no
    max-pool, as in the paper's CIFAR networks, so only the three transitions downsample (total stride 8, a
    4x4 final map). Stages are the dense blocks, each with the transition that precedes it.

    ``pool_ceil=False`` makes the transitions' average pools drop an odd last row and column, as torchvision's
    and timm's do; the two agree wherever the maps are even (224, 256, 32), and differ at, say, 250.

    The ``densenet_k*_cifar`` presets are the small DenseNets of the source CIFAR-10 experiment, named by growth
    rate and layers per block (``KERAS_CIFAR_PRESETS``). Its Keras build used a 16-channel stem and a 128-channel
    bottleneck whatever the growth rate (``bottleneck_chs=128``), and printed 0.255M, 0.505M, 0.600M, 1.10M and
    3.31M parameters. Our trainable counts are about 1.5% lower (250,978 for the first) because Keras also counts
    BatchNorm's moving mean and variance, two per BN channel; with those added ours agree to within 0.3%, the
    rounding of the quoted figures.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, growth_rate: int = 32,
                 block_config: tuple[int, ...] = (6, 12, 24, 16), stem_chs: int = 64,
                 bottleneck_chs: int | None = None, compression: float = 0.5, drop_rate: float = 0.0,
                 cifar: bool = False, pool_ceil: bool = True) -> None:
        super().__init__(num_classes, in_chans)
        if not block_config or any(not isinstance(n, int) or n < 1 for n in block_config):
            raise LightnetsError(f"block_config must list at least one positive layer count, got {block_config!r}")
        if not 0.0 < compression <= 1.0:
            raise LightnetsError(f"compression must be in (0, 1], got {compression!r}")
        if cifar:
            self.stem = nn.Conv2d(in_chans, stem_chs, 3, padding=1, bias=False)
            stride = 1
        else:
            self.stem = nn.Sequential(ConvBnAct(in_chans, stem_chs, 7, 2), nn.MaxPool2d(3, 2, padding=1))
            stride = 4

        make_layer = partial(DenseLayer, growth_rate=growth_rate, bottleneck_chs=bottleneck_chs or 4 * growth_rate)
        stages, self.feature_info = [], []
        chs = stem_chs
        for i, num_layers in enumerate(block_config):
            parts: list[nn.Module] = []
            if i > 0:
                parts.append(DenseTransition(chs, int(chs * compression), pool_ceil))
                chs, stride = parts[-1].out_chs, stride * 2
            parts.append(DenseBlock(chs, num_layers, growth_rate, make_layer))
            chs = parts[-1].out_chs
            stages.append(nn.Sequential(*parts))
            self.feature_info.append(FeatureInfo(chs, stride, f"stages.{i}"))
        self.stages = nn.ModuleList(stages)
        # The blocks are pre-activated, so the last one's output still needs its BN and ReLU.
        self.final = nn.Sequential(nn.BatchNorm2d(chs), nn.ReLU(inplace=True))
        self.head = ClassifierHead(chs, num_classes, drop_rate)
        init_weights(self)


_PAPER = ("Huang et al. 2017, Densely Connected Convolutional Networks, Table 3 (single-crop top-1); "
          "MACs as counted by torchvision")
for _depth, _blocks, _params, _macs, _top1, _exact in [
    (121, (6, 12, 24, 16), 8.0e6, 2.83e9, 74.98, 7_978_856),
    (169, (6, 12, 32, 32), 14.1e6, 3.36e9, 76.20, 14_149_480),
    (201, (6, 12, 48, 32), 20.0e6, 4.29e9, 77.42, 20_013_928),
]:
    register_model(
        f"densenet{_depth}", DenseNet, family="densenet", input_size=224, block_config=_blocks,
        summary=f"DenseNet-BC-{_depth}, growth rate 32",
        published=Published(_PAPER, params=_params, macs=_macs, top1=_top1, reference_params=_exact,
                            reference_source=f"torchvision densenet{_depth}"),
    )
    register_model(
        f"densenet{_depth}_cifar", DenseNet, family="densenet", input_size=32, block_config=_blocks, cifar=True,
        summary=f"DenseNet-BC-{_depth} for 32x32: one 3x3/1 conv stem (64 channels), no max-pool",
    )

# The source experiment's small DenseNets for CIFAR-10 (its 'Koshian-2' to 'Koshian-6'): growth rate, layers per
# block, and the parameter count its Keras build printed (which includes BatchNorm's moving mean and variance).
KERAS_CIFAR_PRESETS: dict[str, tuple[int, tuple[int, ...], float]] = {
    "densenet_k16_1_2_4_3_cifar": (16, (1, 2, 4, 3), 0.255e6),
    "densenet_k32_1_2_4_3_cifar": (32, (1, 2, 4, 3), 0.505e6),
    "densenet_k16_2_4_8_5_cifar": (16, (2, 4, 8, 5), 0.600e6),
    "densenet_k16_3_6_12_8_cifar": (16, (3, 6, 12, 8), 1.10e6),
    "densenet_k16_6_12_24_16_cifar": (16, (6, 12, 24, 16), 3.31e6),
}
for _name, (_k, _blocks, _keras) in KERAS_CIFAR_PRESETS.items():
    register_model(
        _name, DenseNet, family="densenet", input_size=32, growth_rate=_k, block_config=_blocks, stem_chs=16,
        bottleneck_chs=128, cifar=True,
        summary=f"DenseNet-BC k={_k}, blocks {_blocks}, 128-channel bottleneck, for 32x32 (source's Keras preset, "
                f"{_keras / 1e6:#.3g}M there with BN statistics)",
    )
