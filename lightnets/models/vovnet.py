"""VoVNet (Lee et al. 2019): stages of one-shot aggregation (OSA) modules on a three-conv stem."""

from __future__ import annotations

from torch import nn

from ..errors import LightnetsError
from ..layers import ConvBnAct, OSAModule, init_weights
from .base import ClassifierHead, FeatureInfo, LightNet
from .registry import Published, register_model

# Per variant: 3x3 conv width in each stage's OSA modules, each stage's output width, OSA modules per stage
# (stages 2 to 5), as in the authors' VoVNet.pytorch.
VOVNET_CONFIGS: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "27_slim": ((64, 80, 96, 112), (128, 256, 384, 512), (1, 1, 1, 1)),
    "39": ((128, 160, 192, 224), (256, 512, 768, 1024), (1, 1, 2, 2)),
    "57": ((128, 160, 192, 224), (256, 512, 768, 1024), (1, 1, 4, 3)),
}


class VoVNet(LightNet):
    """VoVNet ``variant`` '27_slim', '39' or '57' with ``layers_per_module`` 3x3 convs in each OSA module.

    Stem: 3x3/2 conv (64), 3x3 conv (64), 3x3/2 conv (128). Stage 2 keeps the stem's stride 4; stages 3 to 5
    each start with a 3x3/2 max-pool (ceil mode), so the total stride is 32 and there is no pool after stage 5.
    OSA modules follow the paper (no residual connection, as in timm's vovnet39a/57a: 22,600,296 and
    36,640,296 parameters; 27-slim has 3,525,736).

    ``cifar=True`` (the ``_cifar`` variants), changed as the source experiment did for CIFAR-10: the stem's first
    conv has stride 1 and no max-pool follows the last stage. The total stride is 16, so a 32x32 image ends as
    a 2x2 map (the source's Keras build also halves four times; its unpadded 3x3 pools even end at 1x1).
    That build printed 2.68M / 18.6M / 30.5M parameters for 27-slim / 39 / 57. Ours (10 classes) have more
    because each of our OSA modules, like the paper's, feeds its own input into the final 1x1 aggregation while
    the Keras build aggregates only the five 3x3 outputs: the weights from module input to aggregation are the
    whole difference (0.34M / 2.98M / 5.21M), beside BatchNorm's moving statistics that Keras also counts.

    VoVNetV2 (Lee and Park 2020, CenterMask; timm's ``ese_vovnet39b`` / ``ese_vovnet57b``, the same stem, widths
    and pools as above): ``ese=True`` gates the last OSA module of each stage with an effective squeeze-excite,
    and ``residual=True`` adds an identity shortcut around every OSA module but the first of each stage (the only
    ones whose input and output widths agree), after the gate. Only their fresh initialisation differs from
    timm's (see the comment in ``__init__``).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, variant: str = "39", layers_per_module: int = 5,
                 drop_rate: float = 0.0, cifar: bool = False, ese: bool = False, residual: bool = False) -> None:
        super().__init__(num_classes, in_chans)
        if variant not in VOVNET_CONFIGS:
            raise LightnetsError(f"variant must be one of {', '.join(sorted(VOVNET_CONFIGS))}, got {variant!r}")
        if not isinstance(layers_per_module, int) or layers_per_module < 1:
            raise LightnetsError(f"layers_per_module must be an integer >= 1, got {layers_per_module!r}")
        stage_chs, out_chs, modules_per_stage = VOVNET_CONFIGS[variant]
        self.stem = nn.Sequential(
            ConvBnAct(in_chans, 64, 3, 1 if cifar else 2), ConvBnAct(64, 64, 3), ConvBnAct(64, 128, 3, 2)
        )
        chs, stride = 128, 2 if cifar else 4
        stages, self.feature_info = [], []
        for i, (conv_chs, stage_out, count) in enumerate(zip(stage_chs, out_chs, modules_per_stage, strict=True)):
            parts: list[nn.Module] = []
            if i > 0:
                parts.append(nn.MaxPool2d(3, 2, ceil_mode=True))
                stride *= 2
            for j in range(count):
                parts.append(OSAModule(chs, conv_chs, stage_out, layers_per_module, ese=ese and j == count - 1,
                                       residual=residual and j > 0))
                chs = stage_out
            stages.append(nn.Sequential(*parts))
            self.feature_info.append(FeatureInfo(chs, stride, f"stages.{i}"))
        self.stages = nn.ModuleList(stages)
        self.final = nn.Identity()
        self.head = ClassifierHead(chs, num_classes, drop_rate)
        init_weights(self)
        # Each shortcut adds a whole module's (post-ReLU, positive) output to the stream, which no norm follows:
        # fresh, a stage of k modules would hand on about k times a module's scale, and a first SGD step at the
        # usual learning rates overshoots (as timm's own ese_vovnet57b does). Starting the shortcut modules'
        # aggregation BN scale at 1/k keeps the stream near one module's scale; loaded weights overwrite it.
        for stage in self.stages:
            modules = [m for m in stage if isinstance(m, OSAModule)]
            for module in modules:
                if module.residual:
                    nn.init.constant_(module.aggregate[1].weight, 1.0 / len(modules))


# The source experiment's Keras CIFAR-10 builds: parameters it printed.
KERAS_CIFAR_PARAMS = {"vovnet27_slim_cifar": 2.68e6, "vovnet39_cifar": 18.6e6, "vovnet57_cifar": 30.5e6}

_PAPER = "Lee et al. 2019, An Energy and GPU-Computation Efficient Backbone Network (VoVNet)"
for _variant, _params, _exact, _source in [
    ("27_slim", 3.5e6, 3_525_736, "authors' configuration built with timm's VovNet"),
    ("39", 22.6e6, 22_600_296, "timm vovnet39a"),
    ("57", 36.6e6, 36_640_296, "timm vovnet57a"),
]:
    _name = f"vovnet{_variant}"
    _title = f"VoVNet-{_variant.replace('_', '-')}"
    register_model(
        _name, VoVNet, family="vovnet", input_size=224, variant=_variant, summary=_title,
        published=Published(_PAPER, params=_params, reference_params=_exact, reference_source=_source),
    )
    register_model(
        f"{_name}_cifar", VoVNet, family="vovnet", input_size=32, variant=_variant, cifar=True,
        summary=f"{_title} for 32x32: stem's first conv at stride 1 (total stride 16, 2x2 final map)",
    )

_V2 = "Lee and Park 2020, CenterMask (VoVNetV2: eSE and identity shortcuts)"
for _variant, _exact in [("39", 24_568_936), ("57", 38_608_936)]:
    register_model(
        f"ese_vovnet{_variant}b", VoVNet, family="vovnet", input_size=224, variant=_variant, ese=True, residual=True,
        summary=f"VoVNetV2-{_variant}: VoVNet-{_variant} with eSE and identity shortcuts (timm ese_vovnet{_variant}b)",
        published=Published(_V2, reference_params=_exact, reference_source=f"timm ese_vovnet{_variant}b"),
    )
