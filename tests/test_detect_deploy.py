"""Detector export: the ONNX file plus the numpy post-processing finds the boxes lightnets' own decoding finds, the
metadata carries what deployment needs, a failed numeric check writes nothing, and decode_heads is decode."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import lightnets.detect.deploy as deploy
from lightnets import LightnetsError
from lightnets.cli import main
from lightnets.data import IMAGENET_MEAN, IMAGENET_STD
from lightnets.deploy import read_metadata
from lightnets.detect import (
    OnnxDetector,
    create_detector,
    decode,
    decode_heads,
    detect_images,
    export_detector,
    letterbox_image,
    network_input,
    synthetic_pages,
)
from lightnets.detect.tiles import TileConfig
from lightnets.models.base import randomize_batch_norms
from lightnets.train import save_checkpoint

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def trained_like(model: nn.Module, image: np.ndarray, input_size: int) -> nn.Module:
    """Batch norms with non-trivial statistics (so a wrong fold shows), and the last heads rescaled so that on
    ``image`` the heatmap logits spread as after training (mean -2, std 1.5: distinct peaks, no saturated ties)
    and sizes are positive; fresh heads sit at their prior everywhere, all near-ties."""
    randomize_batch_norms(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        heads = model.refinements[-1].heads if model.refinements else model.heads
        heatmap, size = heads.heatmap[-1], heads.size[-1]
        heatmap.weight.normal_(0, 1.0, generator=g)
        size.weight.normal_(0, 1.0, generator=g)
        x = network_input(torch.from_numpy(letterbox_image(image, input_size)[0]).permute(2, 0, 1)[None])
        out = model.eval()(x)[-1]
        for conv, name, mean, std in ((heatmap, "heatmap", -2.0, 1.5), (size, "size", 3.0, 0.5)):
            values = out[name].transpose(0, 1).flatten(1)  # per output channel
            scale = std / values.std(1)
            conv.bias.copy_(mean - scale * (values.mean(1) - conv.bias))
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
    return model


@pytest.fixture
def page(tmp_path):
    synthetic_pages(tmp_path / "page", 1, size=(128, 128), char_sizes=(10, 16))
    return np.asarray(Image.open(tmp_path / "page" / "images" / "page_00000.png").convert("RGB"))


@pytest.fixture
def checkpoint(tmp_path, page):
    torch.manual_seed(2)  # the same weights whatever ran before: near-ties between peaks depend on them
    model = trained_like(create_detector("mobilenetv1_025", num_classes=2, stacks=2), page, 96)
    meta = {"task": "detection", "detector": model.config, "classes": ["a", "b"], "class_agnostic": False,
            "input_size": 64, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "top_k": 40}
    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run" / "best", model.state_dict(), meta)
    return tmp_path / "run", model


def test_exported_detector_finds_the_boxes_pytorch_finds(checkpoint, page, capsys, one_thread):
    run, model = checkpoint
    assert main(["detect", "export", str(run), "--input-size", "96"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {run / 'best.onnx'}" in out and "max |difference| heatmap" in out
    assert sorted(p.name for p in run.iterdir()) == ["best.json", "best.onnx", "best.safetensors"]  # no temporary

    meta = read_metadata(run / "best.onnx")
    assert meta["task"] == "detection" and meta["class_names"] == '["a", "b"]' and meta["input_size"] == "96"
    assert json.loads(meta["mean"]) == list(IMAGENET_MEAN) and json.loads(meta["std"]) == list(IMAGENET_STD)
    assert meta["output_stride"] == "4" and meta["top_k"] == "40"

    detector = OnnxDetector(run / "best.onnx")
    for top_k, threshold in ((None, 0.05), (1000, 0.3)):  # the file's top-K (40) decides, then the threshold
        got = detector(page, top_k=top_k, score_threshold=threshold)
        [want] = detect_images(model, [page], 96, top_k=top_k or 40, score_threshold=threshold)
        assert len(want) == 40 if top_k is None else 10 <= len(want) < 200
        torch.testing.assert_close(got.boxes, want.boxes, atol=1e-3, rtol=0)
        torch.testing.assert_close(got.scores, want.scores, atol=1e-5, rtol=0)
        assert got.labels.tolist() == want.labels.tolist() and set(want.labels.tolist()) == {0, 1}
        assert (got.boxes >= 0).all() and (got.boxes <= 128).all() and (got.boxes[:, 2:] >= got.boxes[:, :2]).all()


def test_a_failed_numeric_check_writes_nothing(tmp_path, checkpoint, monkeypatch):
    _, model = checkpoint

    def partial_export(module, example, path, opset, dynamic_batch=False, output_names=()):
        path.write_bytes(b"half an onnx file")

    def off_by_a_little(path, inputs, dynamic_batch=False):
        with torch.no_grad():
            outputs = [t.numpy() for t in deploy.DetectorHeads(model)(torch.from_numpy(inputs))]
        outputs[1] = outputs[1] + 0.01  # the size head drifts beyond 1e-4 x its magnitude
        return outputs

    monkeypatch.setattr(deploy, "export_graph", partial_export)
    monkeypatch.setattr(deploy, "write_metadata", lambda path, meta: None)
    monkeypatch.setattr(deploy, "run_outputs", off_by_a_little)
    target = tmp_path / "out" / "detector.onnx"
    with pytest.raises(LightnetsError, match=r"numeric check: max \|size difference\| 0.01 > "):
        export_detector(model, target, input_size=32)
    assert list(target.parent.iterdir()) == []


def test_decode_heads_is_decode_in_numpy():
    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(1, 3, 20, 24, generator=g)
    size = torch.randn(1, 2, 20, 24, generator=g) * 2 + 1  # some negative: clamped to zero in both
    offset = torch.rand(1, 2, 20, 24, generator=g)
    transform = torch.tensor([[0.5, 0.6, 3.0, 7.0]])
    image_size = torch.tensor([[50.0, 40.0]])
    for top_k, threshold in ((30, 0.2), (1000, 0.5)):
        [want] = decode({"heatmap": logits, "size": size, "offset": offset}, stride=4, top_k=top_k,
                        score_threshold=threshold, transforms=transform, image_sizes=image_size)
        boxes, scores, labels = decode_heads(logits.sigmoid().numpy(), size.numpy(), offset.numpy(), stride=4,
                                             top_k=top_k, score_threshold=threshold, transform=transform[0].tolist(),
                                             image_size=(50, 40))
        assert len(want) > 10
        np.testing.assert_allclose(boxes, want.boxes.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(scores, want.scores.numpy(), atol=1e-6, rtol=0)
        assert labels.tolist() == want.labels.tolist()
    with pytest.raises(LightnetsError, match="batch 1"):
        decode_heads(np.zeros((2, 1, 4, 4)), np.zeros((2, 2, 4, 4)), np.zeros((2, 2, 4, 4)), stride=4)


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["detect", "export", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lightnets: error: checkpoint file") and err.count("\n") == 1
    with pytest.raises(LightnetsError, match="path of the .onnx file"):
        export_detector(create_detector("mobilenetv1_025", num_classes=1))
    with pytest.raises(LightnetsError, match="not an exported detector"):
        (tmp_path / "x.onnx").write_bytes(b"")
        OnnxDetector(tmp_path / "x.onnx")


def test_tiled_inference_agrees_between_pytorch_and_onnx_and_serves_the_commands(checkpoint, page, tmp_path, capsys,
                                                                                 one_thread):
    """A 128 px page in 64 px tiles (3 x 3 at overlap 16): ONNX Runtime's tiled boxes are PyTorch's, and
    ``detect predict`` and ``detect eval`` take ``--tiles``."""
    run, model = checkpoint
    assert main(["detect", "export", str(run)]) == 0
    tiles = TileConfig(size=64, overlap=16)
    got = OnnxDetector(run / "best.onnx")(page, top_k=40, score_threshold=0.2, tiles=tiles)
    [want] = detect_images(model, [page], 64, top_k=40, score_threshold=0.2, tiles=tiles)
    assert len(want) > 0

    def as_set(found):  # by position: scores a few 1e-7 apart may swap ranks between the two runtimes
        rows = torch.cat([found.boxes, found.labels[:, None].float()], 1).numpy()
        return rows[np.lexsort(np.round(rows, 2).T[::-1])]

    np.testing.assert_allclose(as_set(got), as_set(want), atol=1e-3)
    with pytest.raises(LightnetsError, match="do not fit"):
        OnnxDetector(run / "best.onnx")(page, tiles=TileConfig(size=96))
    capsys.readouterr()
    image = tmp_path / "page" / "images" / "page_00000.png"
    assert main(["detect", "predict", str(run), str(image), "--tiles", "1", "--tile-overlap", "16", "--out",
                 str(tmp_path / "drawn")]) == 0
    assert (tmp_path / "drawn" / "page_00000.png").is_file()
    labelled = tmp_path / "labelled"
    (labelled / "images").mkdir(parents=True)
    (labelled / "images" / image.name).write_bytes(image.read_bytes())
    (labelled / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": f"images/{image.name}", "width": 128, "height": 128}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 12, 14]}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    assert main(["detect", "eval", str(run), str(labelled), "--tiles", "1,0.5"]) == 0
    assert "f1" in capsys.readouterr().out
    assert main(["detect", "predict", str(run), str(image), "--tiles", "big"]) == 2
    assert "--tiles takes none, auto or scale factors" in capsys.readouterr().err
