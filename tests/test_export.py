"""Export: batch-norm folding, ONNX numerics and metadata, atomic writes, int8, the ONNX classifier."""

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import lightnets
import lightnets.deploy.onnx as deploy_onnx
import lightnets.export as ex
from lightnets import LightnetsError
from lightnets.cli import main
from lightnets.models.base import randomize_batch_norms

SMALL = "mobilenetv3_small_075_cifar"

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def trained_like(name: str) -> tuple[nn.Module, ex.DeployInfo]:
    """A model whose batch norms hold non-trivial statistics and whose logits are large, as after training,
    so that folding and export errors would show (fresh models have identity batch norms and tiny logits)."""
    model, info = ex.load_for_deploy(name)
    randomize_batch_norms(model)
    with torch.no_grad():
        model.get_classifier().weight.mul_(300)
    return model.eval(), info


@pytest.mark.parametrize("name", ["mobilenetv3_small_075_cifar", "efficientnet_b0_cifar", "vovnet27_slim_cifar"])
def test_fold_batchnorm_preserves_outputs(name):
    if name not in lightnets.list_models():
        pytest.skip(f"{name} is not registered")
    model, _ = trained_like(name)
    folded, n = ex.fold_batchnorm(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref, out = model(x), folded(x)
    assert n > 0
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == \
        sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) - n
    assert ref.abs().max() > 1  # logits large enough for the tolerance to mean something
    # fp32 rounding differs after folding; bound it relative to the largest logit (a wrong fold is off by O(1))
    torch.testing.assert_close(out, ref, atol=2e-5 * ref.abs().max().item(), rtol=0)
    assert model.training is False and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_export_matches_pytorch_and_carries_metadata(tmp_path):
    model, info = trained_like("mobilenetv3_small_075_cifar")
    info = ex.DeployInfo(info.model_name, 32, [f"c{i}" for i in range(10)], (0.5, 0.4, 0.3), (0.2, 0.2, 0.25))
    result = ex.export_onnx(model, tmp_path / "m.onnx", info, dynamic_batch=True)
    assert result.path.is_file() and result.max_abs_diff <= 1e-4 and result.folded_bn > 0
    assert list(tmp_path.iterdir()) == [result.path]  # no temporary left behind
    x = torch.randn(3, 3, 32, 32)
    got = ex.onnx_session(result.path).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4, rtol=0)
    meta = ex.read_metadata(result.path)
    back = ex.DeployInfo.from_metadata(meta)
    assert back.class_names == info.class_names and back.mean == (0.5, 0.4, 0.3) and back.std == (0.2, 0.2, 0.25)
    assert back.model_name == "mobilenetv3_small_075_cifar" and back.input_size == 32
    assert meta["precision"] == "fp32" and ex.input_batch(result.path) is None


def test_failed_check_leaves_no_file(tmp_path, monkeypatch):
    model, info = ex.load_for_deploy("mobilenetv3_small_075_cifar")
    monkeypatch.setattr(deploy_onnx, "_run_for_check", lambda path, inputs, dynamic: np.full((len(inputs), 10), 1.0))
    target = tmp_path / "out" / "m.onnx"
    with pytest.raises(LightnetsError, match="failed the numeric check"):
        ex.export_onnx(model, target, info)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_int8_export_and_classifier(tmp_path):
    model, info = trained_like("mobilenetv3_small_075_cifar")
    calibration = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    result = ex.export_onnx(model, tmp_path / "q.onnx", info, precision="int8", calibration=calibration)
    assert ex.read_metadata(result.path)["precision"] == "int8"
    assert 0.0 <= result.top1_agreement <= 1.0 and np.isfinite(result.max_abs_diff)
    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    with pytest.raises(LightnetsError, match="calibration"):
        ex.export_onnx(model, tmp_path / "r.onnx", info, precision="int8")


def test_classifier_applies_the_recorded_preprocessing(tmp_path, capsys):
    model, info = trained_like("mobilenetv3_small_075_cifar")
    info = ex.DeployInfo(info.model_name, 32, [f"class{i}" for i in range(10)], (0.4, 0.5, 0.6), (0.3, 0.2, 0.25))
    path = ex.export_onnx(model, tmp_path / "m.onnx", info).path  # fixed batch 1
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 40, 3), dtype=np.uint8))
    image.save(tmp_path / "a.png")
    clf = ex.OnnxClassifier(path)
    [(_, [(name, prob)])] = clf.predict([tmp_path / "a.png"])
    manual = image.resize((32, 38), Image.BILINEAR).crop((0, 3, 32, 35))
    x = torch.from_numpy(np.asarray(manual, np.float32) / 255).permute(2, 0, 1)
    x = (x - torch.tensor(info.mean)[:, None, None]) / torch.tensor(info.std)[:, None, None]
    with torch.no_grad():
        probs = model(x[None]).softmax(1)[0]
    assert name == f"class{int(probs.argmax())}" and prob == pytest.approx(float(probs.max()), abs=1e-4)
    assert len(clf.predict([tmp_path / "a.png"] * 2, top_k=3)[1][1]) == 3  # a fixed-batch file takes two images
    for runtime in [r for r in ("onnxruntime", "openvino") if importlib.util.find_spec(r)]:
        assert main(["predict", str(path), str(tmp_path / "a.png"), "--backend", runtime, "--topk", "1"]) == 0
        assert f"{name} {100 * prob:.1f}%" in capsys.readouterr().out


@pytest.mark.skipif(ex.runtime_missing("openvino_bf16") is not None, reason="no OpenVINO or no bf16 instructions")
def test_openvino_bf16_computes_in_bf16_and_agrees(tmp_path):
    model, info = trained_like(SMALL)
    path = ex.export_onnx(model, tmp_path / "m.onnx", info, dynamic_batch=True).path
    x = np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)
    fp32 = ex.runtime_runner(path, "openvino")(x)
    bf16 = ex.runtime_runner(path, "openvino_bf16")(x)
    diff = np.abs(bf16 - fp32).max() / np.abs(fp32).max()
    assert 1e-5 < diff < 0.05  # bf16 keeps 8 bits of mantissa: visibly different, still close
    assert ex.top1_agreement(bf16, fp32, tie=0.05 * np.abs(fp32).max()) == 1.0


def test_openvino_bf16_without_bf16_instructions_is_reported(tmp_path, monkeypatch, capsys):
    pytest.importorskip("openvino")
    import openvino as ov

    monkeypatch.setattr(ov.Core, "get_property", lambda self, device, name: ["FP32", "INT8"])
    why = "this CPU has no bf16 instructions (OpenVINO reports none)"
    assert ex.runtime_missing("openvino_bf16") == why
    assert ex.runtime_missing("openvino") is None
    from lightnets.bench import run_benchmark

    (result,) = run_benchmark([SMALL], batch_sizes=[1], backends=["openvino_bf16"], min_time=0.05)
    assert result.status == f"skipped: {why}"
    model, info = trained_like(SMALL)
    path = ex.export_onnx(model, tmp_path / "m.onnx", info).path
    assert main(["predict", str(path), str(tmp_path), "--backend", "openvino_bf16"]) == 2
    err = capsys.readouterr().err
    assert err == f"lightnets: error: runtime openvino_bf16 cannot run here: {why}\n"
    with pytest.raises(LightnetsError, match="unknown runtime 'tensorrt'; choose from onnxruntime"):
        ex.runtime_missing("tensorrt")


def test_cli_export_and_errors(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "mobilenetv3_small_075_cifar", "-o", str(out)]) == 0
    assert out.is_file() and "max |logit difference|" in capsys.readouterr().out
    assert main(["export", "mobilenetv3_small_075_cifar", "--int8", "-o", str(tmp_path / "q.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lightnets: error: int8 export needs calibration images") and err.count("\n") == 1
    assert main(["export", "no_such_net"]) == 2


def test_checkpoint_loads_with_its_metadata_and_mismatch_is_refused(tmp_path):
    from lightnets.train import save_checkpoint

    model = lightnets.create_model(SMALL, num_classes=3)
    meta = {"model": SMALL, "model_args": {}, "num_classes": 3, "classes": ["cat", "dog", "frog"],
            "image_size": 32, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26], "metrics": {"val_top1": 87.5}}
    save_checkpoint(tmp_path / "best", model.state_dict(), meta)
    loaded, info = ex.load_for_deploy(str(tmp_path / "best.safetensors"))
    assert info.class_names == ["cat", "dog", "frog"] and info.mean == (0.49, 0.48, 0.45) and info.top1 == 0.875
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))
    save_checkpoint(tmp_path / "best", model.state_dict(), meta | {"model": "mobilenetv1_025_cifar"})
    with pytest.raises(LightnetsError, match="do not fit mobilenetv1_025_cifar"):
        ex.load_for_deploy(str(tmp_path))
    assert main(["export", str(tmp_path / "best.json")]) == 2


def test_split_logits_runs_an_exported_model(tmp_path):
    """An exported model (no parameters) scores a data split as its PyTorch original does."""
    from lightnets.data import Split
    from lightnets.train.classify import split_logits

    model, info = trained_like(SMALL)
    path = ex.export_onnx(model, tmp_path / "m.onnx", info, dynamic_batch=True).path
    split = Split(torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8), torch.arange(12) % 10)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    with torch.no_grad():
        expected = split_logits(model, split, mean, std, batch_size=5)
    got = split_logits(ex.OnnxClassifier(path), split, mean, std, batch_size=5)
    assert got.shape == (12, 10)
    torch.testing.assert_close(got, expected, atol=1e-4 * float(expected.abs().max()), rtol=0)
