"""Issue 23, class 1: a user- or OS-caused failure is one line on stderr and exit status 2, never a traceback;
options are refused on parse. Each test builds its bad input itself."""

import errno
import json
import os
import sys

import pytest
import torch
from conftest import write_folder
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import lightnets
from lightnets.cli import main
from lightnets.errors import LightnetsError
from lightnets.train import get_recipe, save_checkpoint, train

MODEL = "mobilenetv1_025_cifar"


@pytest.fixture
def checkpoint(tmp_path):
    """A complete two-class checkpoint of a tiny model, and an image to predict on."""
    model = lightnets.create_model(MODEL, num_classes=2)
    meta = {"model": MODEL, "model_args": {}, "num_classes": 2, "classes": ["dark", "light"], "image_size": 32,
            "mean": [0.5] * 3, "std": [0.25] * 3, "recipe": get_recipe("fast").to_dict(), "metrics": {}}
    save_checkpoint(tmp_path / "run" / "best", model.state_dict(), meta)
    Image.new("RGB", (32, 32), (10, 20, 30)).save(tmp_path / "image.png")
    return tmp_path / "run"


def one_line_error(capsys, argv, message):
    """Run the command; it must exit 2 with ``message`` in a one-line error and no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lightnets: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err, err


def edit_meta(run, change):
    path = run / "best.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def drop(key):
    return lambda run: edit_meta(run, lambda meta: {k: v for k, v in meta.items() if k != key})


def set_meta(key, value):
    return lambda run: edit_meta(run, lambda meta: meta | {key: value})


def truncate(run):
    path = run / "best.safetensors"
    path.write_bytes(path.read_bytes()[:1000])


def garbage(run):
    (run / "best.safetensors").write_bytes(os.urandom(5000))


def not_utf8(run):
    (run / "best.json").write_bytes(b'\xff\xfe{"format": "lightnets-checkpoint"}')


def nan_weights(run):
    weights = load_file(str(run / "best.safetensors"))
    save_file({k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in weights.items()},
              str(run / "best.safetensors"))


@pytest.mark.parametrize("damage,command,message", [
    (truncate, "predict", "best.safetensors is not a readable safetensors file"),
    (garbage, "predict", "best.safetensors is not a readable safetensors file"),
    (not_utf8, "predict", "best.json is not a lightnets checkpoint: not UTF-8 text"),
    (drop("classes"), "predict", "best.json has no 'classes'"),
    (drop("model"), "predict", "best.json has no 'model'"),
    (drop("mean"), "predict", "best.json has no 'mean'"),
    (drop("image_size"), "predict", "best.json has no 'image_size'"),
    (drop("recipe"), "eval", "best.json has no 'recipe'"),
    (set_meta("model_args", [1]), "export", "'model_args' must be a mapping of model arguments"),
    (set_meta("std", [0.25, 0, 0.25]), "predict", "'std' must be a list of finite numbers above 0"),
    (set_meta("classes", ["dark"]), "predict", "1 classes for num_classes 2"),
    (nan_weights, "predict", "is corrupt: weight"),
], ids=["truncated", "garbage", "not-utf8", "no-classes", "no-model", "no-mean", "no-image-size", "no-recipe",
        "model-args-list", "std-zero", "classes-count", "nan-weights"])
def test_damaged_checkpoint_is_one_line(checkpoint, capsys, damage, command, message):
    damage(checkpoint)
    argv = {"predict": ["predict", str(checkpoint), str(checkpoint.parent / "image.png")],
            "eval": ["eval", str(checkpoint), "--data", str(checkpoint.parent)],  # refused before the data is read
            "export": ["export", str(checkpoint), "-o", str(checkpoint.parent / "m.onnx")]}[command]
    one_line_error(capsys, argv, message)


def test_damaged_onnx_file_is_one_line(tmp_path, capsys):
    (tmp_path / "m.onnx").write_bytes(os.urandom(3000))
    Image.new("RGB", (32, 32)).save(tmp_path / "image.png")
    one_line_error(capsys, ["predict", str(tmp_path / "m.onnx"), str(tmp_path / "image.png"), "--backend",
                            "onnxruntime"], "m.onnx is not a readable ONNX file")


def test_full_disk_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch, one_thread):
    """ENOSPC while exporting (an OSError naming only the temporary file, if any) and while writing a checkpoint
    (safetensors reports it as its own error): the message names the file being written and the cause."""

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch.onnx, "export", no_space)
    out = tmp_path / "m.onnx"
    one_line_error(capsys, ["export", MODEL, "-o", str(out)], f"cannot write {out}: No space left on device")
    assert not out.exists()

    def no_space_safetensors(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(sys.modules["lightnets.train.checkpoint"], "save_file", no_space_safetensors)
    monkeypatch.setenv("LIGHTNETS_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    one_line_error(capsys, ["train", "--model", MODEL, "--data", str(write_folder(tmp_path / "data")), "--epochs",
                            "1", "--warmup", "0", "--batch-size", "16", "--amp", "none", "--no-channels-last",
                            "--threads", "1", "--quiet", "--out", str(run)],
                   f"cannot write {run / 'best.safetensors'}: Error while serializing: I/O error: No space left")

    # The decoded-data cache, written before training starts: the message names the cache file.
    monkeypatch.setattr(sys.modules["lightnets.data.dataset"], "save_file", no_space_safetensors)
    monkeypatch.setenv("LIGHTNETS_CACHE", str(tmp_path / "cache2"))
    one_line_error(capsys, ["train", "--model", MODEL, "--data", str(tmp_path / "data"), "--epochs", "1", "--warmup",
                            "0", "--amp", "none", "--no-channels-last", "--threads", "1", "--quiet", "--out",
                            str(tmp_path / "r2")],
                   f"cannot write {tmp_path / 'cache2' / 'datasets'}")


@pytest.mark.parametrize("argv,message", [
    (["train", "--grad-clip", "-1"], "argument --grad-clip: must be a finite number > 0, got '-1'"),
    (["train", "--grad-clip", "nan"], "argument --grad-clip: must be a finite number > 0, got 'nan'"),
    (["train", "--threads", "0"], "argument --threads: must be a positive integer, got '0'"),
    (["train", "--threads", "-1"], "argument --threads: must be a positive integer, got '-1'"),
    (["train", "--image-size", "0"], "argument --image-size: must be a positive integer, got '0'"),
    (["train", "--image-size", "-5"], "argument --image-size: must be a positive integer, got '-5'"),
    (["train", "--batch-size", "0"], "argument --batch-size: must be a positive integer, got '0'"),
    (["train", "--lr", "-0.1"], "argument --lr: must be a finite number > 0, got '-0.1'"),
    (["train", "--lr", "nan"], "argument --lr: must be a finite number > 0, got 'nan'"),
    (["train", "--epochs", "0"], "argument --epochs: must be a positive integer, got '0'"),
    (["train", "--device", "bogus"], "argument --device: unknown device 'bogus'; choose cpu, cuda, cuda:N or mps"),
    (["specialists", "ckpt", "--data", "x", "--device", "cuda:99"], "argument --device: device cuda:99 is not "
     "available"),
    (["benchmark", "--batch-sizes", "1,0"], "argument --batch-sizes: expected comma-separated positive integers"),
    (["info", MODEL, "--input-size", "0"], "argument --input-size: must be a positive integer, got '0'"),
])
def test_bad_option_is_refused_on_parse(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err.splitlines()[-1] and "Traceback" not in err, err


def test_bad_value_given_to_a_command_is_one_line(checkpoint, capsys):
    """What only the command can judge: predict's topk and batch size, and the ONNX opsets the exporter writes as
    asked (older ones it would quietly write as 18); Python callers get the device check too."""
    image = str(checkpoint.parent / "image.png")
    one_line_error(capsys, ["predict", str(checkpoint), image, "--topk", "0"], "topk must be at least 1, got 0")
    one_line_error(capsys, ["predict", str(checkpoint), image, "--batch-size", "0"],
                   "batch size must be at least 1, got 0")
    if not torch.cuda.is_available():
        with pytest.raises(LightnetsError, match="device cuda is not available"):
            lightnets.predict(checkpoint, [image], device="cuda")
    one_line_error(capsys, ["export", str(checkpoint), "--opset", "5", "-o", str(checkpoint.parent / "m.onnx")],
                   "ONNX opset 5 is not supported: torch's exporter writes opsets 18 to")
    assert not (checkpoint.parent / "m.onnx").exists()


def test_python_api_refuses_a_non_positive_image_size(tmp_path):
    with pytest.raises(LightnetsError, match="image size must be a positive number of pixels, got 0"):
        train(MODEL, str(write_folder(tmp_path / "data")), image_size=0, out=tmp_path / "run")
