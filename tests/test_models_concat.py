"""The concatenation family (DenseNet, PeleeNet, VoVNet, clcNet): exact counts against reference builds, the
source experiment's Keras builds, PeleeNet's CIFAR forms, the full channel receptive field rule, one training step.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lightnets
from lightnets.layers import (
    ChannelInterlace,
    CLCBlock,
    OSAModule,
    channel_receptive_field,
    check_full_channel_receptive_field,
)
from lightnets.models.clcnet import clcnet_layout
from lightnets.models.densenet import KERAS_CIFAR_PRESETS
from lightnets.models.peleenet import KERAS_TRAINABLE_PARAMS
from lightnets.models.vovnet import KERAS_CIFAR_PARAMS

FAMILIES = {"densenet", "peleenet", "vovnet", "clcnet"}
CONCAT_MODELS = [n for n in lightnets.list_models() if lightnets.model_info(n).family in FAMILIES]


def bn_buffers(model: nn.Module) -> int:
    """BatchNorm's moving mean and variance, which Keras counts as (non-trainable) parameters."""
    return sum(2 * m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("name,exact", [
    ("densenet121", 7_978_856), ("densenet169", 14_149_480), ("densenet201", 20_013_928),  # torchvision
    ("vovnet27_slim", 3_525_736), ("vovnet39", 22_600_296), ("vovnet57", 36_640_296),  # timm, authors' configs
    ("peleenet", 2_802_248),  # the Keras build's 2,807,112 less its 4,864 conv biases
    ("clcnet_a", 3_253_640), ("clcnet_b", 4_085_128),  # the authors' clcnet.lua, counted layer by layer
])
def test_exact_parameter_counts(name, exact):
    assert lightnets.count_params(lightnets.create_model(name)) == exact


@pytest.mark.parametrize("name,macs", [("densenet121", 2_834_161_664), ("clcnet_a", 342_973_440)])
def test_exact_macs(name, macs):
    # densenet121: torchvision's model under the same counter; clcnet_a: the authors' layers summed by hand.
    assert lightnets.count(lightnets.create_model(name), 224).macs == macs


def test_peleenet_macs_and_top_level_figures():
    counts = lightnets.count(lightnets.create_model("peleenet"), 224)
    assert counts.macs == pytest.approx(508e6, rel=0.01)
    assert counts.params == pytest.approx(2.8e6, rel=0.01)


@pytest.mark.parametrize("name,num_classes,keras_trainable", KERAS_TRAINABLE_PARAMS)
def test_peleenet_matches_keras_builds_exactly(name, num_classes, keras_trainable):
    model = lightnets.create_model(name, num_classes=num_classes)
    conv_biases = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    assert lightnets.count_params(model) + conv_biases == keras_trainable


@pytest.mark.parametrize("name", sorted(KERAS_CIFAR_PRESETS))
def test_densenet_presets_match_keras_builds(name):
    growth_rate, blocks, keras_total = KERAS_CIFAR_PRESETS[name]
    model = lightnets.create_model(name)
    assert [len(stage[-1]) for stage in model.stages] == list(blocks)  # each stage ends with its dense block
    params = lightnets.count_params(model)
    # Keras's figure includes BatchNorm's moving statistics: without them ours is ~1.5% lower, with them within
    # the 3 significant digits Keras's figures were quoted to.
    assert params < keras_total
    assert params + bn_buffers(model) == pytest.approx(keras_total, rel=0.003)


@pytest.mark.parametrize("name", sorted(KERAS_CIFAR_PARAMS))
def test_vovnet_cifar_differs_from_keras_by_input_aggregation(name):
    model = lightnets.create_model(name)
    input_to_aggregation = sum(m.layers[0][0].in_channels * m.out_chs for m in model.modules()
                               if isinstance(m, OSAModule))
    params = lightnets.count_params(model)
    assert params > KERAS_CIFAR_PARAMS[name]
    assert params - input_to_aggregation + bn_buffers(model) == pytest.approx(KERAS_CIFAR_PARAMS[name], rel=0.003)


def test_peleenet_cifar_forms():
    images = torch.rand(2, 3, 32, 32)
    with_stem = lightnets.create_model("peleenet", num_classes=10).eval()
    no_stem = lightnets.create_model("peleenet_cifar").eval()
    with torch.no_grad():
        upsampled = F.interpolate(images, scale_factor=7, mode="bilinear", align_corners=False)
        assert upsampled.shape[-2:] == (224, 224)
        assert with_stem.forward_features(upsampled).shape == (2, 704, 7, 7)
        assert with_stem(upsampled).shape == (2, 10)
        assert no_stem.forward_features(images).shape == (2, 704, 4, 4)
        assert no_stem(images).shape == (2, 10)
    assert isinstance(no_stem.stem, nn.Identity) and [f.stride for f in no_stem.feature_info] == [1, 2, 4, 8]


def test_channel_interlace_is_a_channel_shuffle():
    x = torch.arange(12.0).view(1, 12, 1, 1)
    out = ChannelInterlace(3)(x).flatten().tolist()
    # Groups (0..3), (4..7), (8..11): consecutive outputs come from different groups.
    assert out == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    y = torch.randn(2, 24, 5, 5)
    assert torch.equal(ChannelInterlace(4)(y), nn.ChannelShuffle(4)(y))


def channel_dependencies(block: nn.Module, in_chs: int) -> torch.Tensor:
    """(outputs, inputs) boolean matrix: does output channel i depend on input channel j."""
    block.eval()
    for p in block.parameters():
        nn.init.ones_(p)  # positive weights, inputs and BN: nothing cancels and every ReLU passes
    jac = torch.autograd.functional.jacobian(lambda x: block(x).flatten(), torch.ones(1, in_chs, 1, 1))
    return jac.reshape(-1, in_chs) != 0


def test_fcrf_rule_matches_the_channel_dependencies():
    full = channel_dependencies(CLCBlock(16, 32, g1=8, g2=2), 16)
    assert full.all()
    partial = CLCBlock(16, 32, g1=8, g2=4, require_fcrf=False)
    deps = channel_dependencies(partial, 16)
    assert not deps.all()
    assert (deps.sum(1) == channel_receptive_field(16, 8, 4)).all() and channel_receptive_field(16, 8, 4) == 8


def test_fcrf_check_accepts_the_papers_blocks_and_rejects_a_failing_one():
    for depths in [(1, 1, 5, 2), (1, 1, 7, 3)]:
        for spec in clcnet_layout(depths):
            check_full_channel_receptive_field(spec.in_chs, spec.g1, spec.g2)
            assert spec.g1 * spec.g2 == spec.in_chs  # the paper's cheapest setting, on the FCRF boundary
    message = r"g1=64, g2=4 on 128 channels lacks a full channel receptive field: g1 \* g2 = 256 > 128"
    with pytest.raises(lightnets.LightnetsError, match=message):
        check_full_channel_receptive_field(128, 64, 4)
    with pytest.raises(lightnets.LightnetsError, match="choose g1 \\* g2 <= 128"):
        CLCBlock(128, 256, g1=64, g2=4)
    with pytest.raises(lightnets.LightnetsError, match="g1 must be a positive divisor of the block's 128 channels"):
        check_full_channel_receptive_field(128, 3, 2)


@pytest.mark.parametrize("name,kwargs,message", [
    ("densenet121", {"block_config": ()}, "block_config must list at least one positive layer count"),
    ("densenet121", {"compression": 0.0}, "compression must be in"),
    ("vovnet39", {"variant": "42"}, "variant must be one of 27_slim, 39, 57, got '42'"),
    ("clcnet_a", {"depths": (1, 1, 5)}, r"depths must be four integers >= 0 \(a, b, c, d\), got \(1, 1, 5\)"),
])
def test_bad_arguments(name, kwargs, message):
    with pytest.raises(lightnets.LightnetsError, match=message):
        lightnets.create_model(name, **kwargs)


@pytest.mark.parametrize("name", CONCAT_MODELS)
def test_trains_one_step(name):
    torch.manual_seed(0)
    model = lightnets.create_model(name, num_classes=5).train()
    # 64x64 for the ImageNet models leaves them a 2x2 last map: at 1x1, BatchNorm over 4 values makes the step erratic.
    size = 32 if lightnets.model_info(name).is_cifar else 64
    images, labels = torch.randn(4, 3, size, size), torch.tensor([0, 1, 2, 3])
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    with torch.no_grad():
        assert F.cross_entropy(model(images), labels) < loss
