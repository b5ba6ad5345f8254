"""Constructor options and variants that let our families compute what timm's and torchvision's pretrained
models compute: TF "SAME" padding, BN epsilon, MobileNetV1's ReLU6, DenseNet's floor pooling, EfficientNet-Lite and
ESE-VoVNet; and that their defaults leave every existing model as it was."""

import importlib.util
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lightnets
from lightnets import LightnetsError
from lightnets.layers import Conv2dTFSame, ConvBnAct, EffectiveSqueezeExcite, OSAModule, tf_same_pad
from lightnets.models.base import randomize_batch_norms


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- TF "SAME" padding -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size,kernel,stride,total", [
    (224, 3, 2, 1), (225, 3, 2, 2), (112, 5, 2, 3), (113, 5, 2, 4), (7, 3, 1, 2), (10, 1, 2, 0), (9, 3, 3, 0),
])
def test_tf_same_pad_amounts(size, kernel, stride, total):
    assert tf_same_pad(size, kernel, stride) == total
    expected = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    assert tf_same_pad(size, kernel, stride) == expected


@pytest.mark.parametrize("size", [8, 9, 16, 17])
@pytest.mark.parametrize("kernel", [3, 5])
def test_tf_padding_pads_bottom_right_like_tensorflow(size, kernel):
    torch.manual_seed(0)
    block = ConvBnAct(4, 6, kernel, 2, act=None, tf_padding=True).eval()
    conv = block[0]
    assert isinstance(conv, Conv2dTFSame) and conv.padding == (0, 0)
    x = torch.randn(2, 4, size, size)
    total = tf_same_pad(size, kernel, 2)
    explicit = F.conv2d(F.pad(x, [total // 2, total - total // 2] * 2), conv.weight, None, 2)
    with torch.no_grad():
        got = conv(x)
    assert got.shape[-2:] == (math.ceil(size / 2),) * 2  # TensorFlow's (and timm's tf_) output size
    assert torch.allclose(got, explicit, atol=1e-6)
    if total % 2:  # the odd pixel goes to the bottom and right: symmetric padding computes something else
        symmetric = F.conv2d(x, conv.weight, None, 2, (kernel - 1) // 2)
        assert not torch.allclose(got, symmetric, atol=1e-3)


def test_tf_padding_rectangular_input():
    conv = Conv2dTFSame(3, 2, 3, 2, bias=False)
    x = torch.randn(1, 3, 10, 7)
    expected = F.conv2d(F.pad(x, [1, 1, 0, 1]), conv.weight, None, 2)  # width 7: total 2; height 10: total 1
    assert torch.allclose(conv(x), expected, atol=1e-6)


def test_tf_padding_is_symmetric_at_stride_1_and_keeps_keys():
    torch.manual_seed(0)
    plain, tf = ConvBnAct(4, 6, 3, 1), ConvBnAct(4, 6, 3, 1, tf_padding=True)
    assert type(tf[0]) is nn.Conv2d and tf[0].padding == (1, 1)
    tf.load_state_dict(plain.state_dict())
    x = torch.randn(1, 4, 9, 9)
    assert torch.equal(plain.eval()(x), tf.eval()(x))
    strided, strided_tf = ConvBnAct(4, 6, 3, 2), ConvBnAct(4, 6, 3, 2, tf_padding=True)
    assert list(strided.state_dict()) == list(strided_tf.state_dict()) == [
        "0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]


@pytest.mark.parametrize("name", ["mobilenetv3_small_075", "efficientnet_lite0"])
def test_models_take_tf_padding_and_bn_eps(name):
    torch.manual_seed(0)
    plain = lightnets.create_model(name, num_classes=5)
    tf = lightnets.create_model(name, num_classes=5, tf_padding=True, bn_eps=1e-2)
    assert list(plain.state_dict()) == list(tf.state_dict())
    tf.load_state_dict(plain.state_dict())
    strided = [m for m in tf.modules() if isinstance(m, nn.Conv2d) and m.stride[0] > 1]
    assert strided and all(isinstance(m, Conv2dTFSame) for m in strided)
    assert {m.eps for m in tf.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-2}
    assert not any(isinstance(m, Conv2dTFSame) for m in plain.modules())
    randomize_batch_norms(plain)
    randomize_batch_norms(tf)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert tf.eval()(x).shape == plain.eval()(x).shape == (1, 5)
        assert not torch.allclose(tf(x), plain(x), atol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnx and onnxruntime")
@pytest.mark.parametrize("size", [9, 10])
def test_tf_padding_exports_to_onnx(tmp_path, size):
    from lightnets.deploy.onnx import export_graph, run_outputs

    torch.manual_seed(0)
    model = nn.Sequential(ConvBnAct(3, 4, 3, 2, tf_padding=True), ConvBnAct(4, 4, 5, 2, tf_padding=True)).eval()
    x = torch.randn(1, 3, size, size)
    export_graph(model, x, tmp_path / "m.onnx", 18)
    got = run_outputs(tmp_path / "m.onnx", x.numpy())[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.shape == expected.shape == (1, 4, 3, 3)
    assert abs(got - expected).max() < 1e-5


# --- defaults are what they were ---------------------------------------------------------------------------------

# (state_dict entries, parameters, a few keys) of models as built before these options existed.
DEFAULTS = {
    "mobilenetv1_100": (164, 4_231_976, ["stem.0.weight", "stages.0.0.0.0.weight", "stages.4.1.1.1.running_var",
                                         "head.fc.weight"]),
    "mobilenetv3_large_100": (312, 5_483_032, ["stem.0.weight", "stages.1.0.expand.0.weight",
                                               "stages.2.0.se.reduce.weight", "final.1.bias",
                                               "head.hidden.0.weight"]),
    "efficientnet_b0": (360, 5_288_548, ["stem.1.running_mean", "stages.0.0.depthwise.0.weight",
                                         "stages.0.0.se.expand.bias", "stages.4.4.project.1.weight",
                                         "final.0.weight", "head.fc.bias"]),
    "densenet121": (727, 7_978_856, ["stem.0.0.weight", "stages.1.0.0.0.weight", "stages.3.1.15.1.2.weight",
                                     "final.0.running_var"]),
    "vovnet39": (236, 22_600_296, ["stem.2.0.weight", "stages.0.0.layers.4.1.bias",
                                   "stages.3.1.aggregate.0.weight", "head.fc.weight"]),
}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_defaults_keep_state_dict_keys(name):
    entries, params, keys = DEFAULTS[name]
    model = lightnets.create_model(name)
    state = model.state_dict()
    assert len(state) == entries and n_params(model) == params
    assert all(k in state for k in keys)
    assert not any(".ese." in k for k in state)
    assert not any(isinstance(m, (Conv2dTFSame, EffectiveSqueezeExcite)) for m in model.modules())


def test_default_bn_eps_and_activations():
    def eps(model):
        return {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)}

    assert eps(lightnets.create_model("efficientnet_b0_cifar")) == {1e-3}
    assert eps(lightnets.create_model("mobilenetv3_small_100_cifar")) == {1e-5}
    v1 = lightnets.create_model("mobilenetv1_100_cifar")
    assert not any(isinstance(m, nn.ReLU6) for m in v1.modules())


# --- MobileNetV1 with ReLU6 --------------------------------------------------------------------------------------

def test_mobilenetv1_relu6():
    model = lightnets.create_model("mobilenetv1_100", act="relu6")
    relu6 = [m for m in model.modules() if isinstance(m, nn.ReLU6)]
    assert len(relu6) == 27 and all(m.inplace for m in relu6)  # the stem and both convs of 13 blocks
    assert not any(type(m) is nn.ReLU for m in model.modules())
    assert list(model.state_dict()) == list(lightnets.create_model("mobilenetv1_100").state_dict())
    with pytest.raises(LightnetsError, match="unknown activation 'relu7'"):
        lightnets.create_model("mobilenetv1_100", act="relu7")


# --- DenseNet's floor pooling ------------------------------------------------------------------------------------

def test_densenet_pool_floor_matches_torchvision_size():
    # At 250 the 63x63 map after the stem pools to 31, 15, 7 in torchvision (floor) and 32, 16, 8 with ceil.
    x = torch.randn(1, 3, 250, 250)
    with torch.no_grad():
        floor = lightnets.create_model("densenet121", pool_ceil=False).eval().forward_features(x)
        ceil = lightnets.create_model("densenet121").eval().forward_features(x)
    assert floor.shape == (1, 1024, 7, 7)
    assert ceil.shape == (1, 1024, 8, 8)


# --- EfficientNet-Lite -------------------------------------------------------------------------------------------

LITE_PARAMS = {  # timm efficientnet_lite0..4
    "efficientnet_lite0": 4_652_008, "efficientnet_lite1": 5_416_680, "efficientnet_lite2": 6_092_072,
    "efficientnet_lite3": 8_197_096, "efficientnet_lite4": 13_006_568,
}


@pytest.mark.parametrize("name", sorted(LITE_PARAMS))
def test_efficientnet_lite_matches_timm_count(name):
    model = lightnets.create_model(name)
    assert n_params(model) == LITE_PARAMS[name]
    assert lightnets.model_info(name).published.reference_params == LITE_PARAMS[name]
    assert model.stem[0].out_channels == 32 and model.final[0].out_channels == 1280  # not scaled by width
    assert not any(isinstance(m, (nn.SiLU, nn.Sigmoid)) for m in model.modules())  # no swish, no SE
    assert {m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
    assert len(model.stages[0]) == 1  # the first stage keeps its single block


def test_efficientnet_lite4_keeps_first_and_last_repeats():
    model = lightnets.create_model("efficientnet_lite4")
    blocks = [b for stage in model.stages for b in stage]
    # depth 1.8: ceil(1.8 * (2, 2, 3, 3, 4)) = (4, 4, 6, 6, 8) in the middle, 1 and 1 at the ends
    assert len(blocks) == 1 + 4 + 4 + 6 + 6 + 8 + 1
    assert blocks[0].out_chs == 24 and blocks[-1].out_chs == 448  # widths scaled by 1.4
    assert lightnets.model_info("efficientnet_lite4").input_size == 300


def test_efficientnet_lite0_cifar():
    model = lightnets.create_model("efficientnet_lite0_cifar").eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 1280, 4, 4)


# --- ESE-VoVNet (VoVNetV2) ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,params,modules", [("ese_vovnet39b", 24_568_936, 6), ("ese_vovnet57b", 38_608_936, 9)])
def test_ese_vovnet_matches_timm_count(name, params, modules):
    model = lightnets.create_model(name)
    assert n_params(model) == params
    osa = [m for m in model.modules() if isinstance(m, OSAModule)]
    assert len(osa) == modules
    # timm: the eSE gate on the last module of each stage, the shortcut on every module but a stage's first
    for stage in model.stages:
        mods = [m for m in stage if isinstance(m, OSAModule)]
        assert [isinstance(m.ese, EffectiveSqueezeExcite) for m in mods] == [False] * (len(mods) - 1) + [True]
        assert [m.residual for m in mods] == [False] + [True] * (len(mods) - 1)
        # fresh shortcut modules start their aggregation BN scale at 1 / (modules in the stage)
        assert all(torch.all(m.aggregate[1].weight == (1.0 / len(mods) if m.residual else 1.0)) for m in mods)
    assert "stages.0.0.ese.fc.weight" in model.state_dict() and "stages.0.0.ese.fc.bias" in model.state_dict()


def test_effective_squeeze_excite_gate():
    torch.manual_seed(0)
    ese = EffectiveSqueezeExcite(8)
    x = torch.randn(2, 8, 5, 5)
    gate = F.relu6(ese.fc(x.mean((2, 3), keepdim=True)) + 3) / 6
    assert torch.allclose(ese(x), x * gate, atol=1e-6)


def test_residual_osa_module():
    torch.manual_seed(0)
    plain, res = OSAModule(16, 8, 16, 2), OSAModule(16, 8, 16, 2, residual=True)
    res.load_state_dict(plain.state_dict())
    x = torch.randn(1, 16, 6, 6)
    assert torch.allclose(res.eval()(x), plain.eval()(x) + x)
    with pytest.raises(LightnetsError, match="in_chs == out_chs"):
        OSAModule(16, 8, 32, 2, residual=True)
