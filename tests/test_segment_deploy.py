"""Segmenter export: the ONNX file plus numpy pre-processing gives PyTorch's class maps at any image size, the file's
metadata is all the predictor needs, a failed numeric check writes nothing, and latency rows are timed side by side."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import lightnets.segment.deploy as deploy
import lightnets.segment.latency as latency
from lightnets import LightnetsError
from lightnets.deploy import read_metadata
from lightnets.models.base import randomize_batch_norms
from lightnets.segment.augment import normalize_images
from lightnets.segment.deploy import OnnxSegmenter, export_segmenter, fixed_input_size
from lightnets.segment.latency import segmenter_latency, time_segmenters
from lightnets.segment.model import create_segmenter
from lightnets.train import save_checkpoint

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

CLASSES = ["sky", "road", "car"]
COLORS = [[128, 128, 128], [128, 64, 128], [64, 0, 128]]
MEAN, STD = [0.4, 0.45, 0.5], [0.25, 0.2, 0.3]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A segmentation checkpoint and its model: batch norms with non-trivial statistics (so a wrong fold shows), and
    the classifiers rescaled so that on a test image every class's logits have mean 0 and std 1, as after training
    (fresh ones give one class everywhere: no regions, no boundaries to get wrong)."""
    torch.manual_seed(0)  # the same weights whatever ran before: the export's error depends on them
    model = create_segmenter("mobilenetv3_small_075", len(CLASSES))
    randomize_batch_norms(model)
    head = model.head
    with torch.no_grad():
        values = torch.from_numpy(torch_logits(model.eval(), image(64, 96, seed=5))).flatten(1)
        scale = 1 / values.std(1)
        for conv in (head.low_classifier, head.high_classifier):
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias.mul_(scale)
        head.low_classifier.bias.sub_(scale * values.mean(1))
    meta = {"task": "segmentation", "segmenter": model.config, "classes": CLASSES, "colors": COLORS, "mean": MEAN,
            "std": STD, "input_hw": [64, 96]}
    folder = tmp_path_factory.mktemp("segment") / "run"
    folder.mkdir()
    save_checkpoint(folder / "best", model.state_dict(), meta)
    model.eval().checkpoint_meta = meta
    return folder, model


@pytest.fixture(scope="module")
def exported(run):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return export_segmenter(run[0], input_size=(64, 96))
    finally:
        torch.set_num_threads(threads)


def image(height, width, seed=0):
    """Smooth random colours (large blobs, as in photographs), so class maps have regions, not noise."""
    g = np.random.default_rng(seed)
    small = g.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def torch_logits(model, picture):
    with torch.no_grad():
        x = normalize_images(torch.from_numpy(picture).permute(2, 0, 1)[None], MEAN, STD)
        return model(x)[0].numpy()


def test_export_is_checked_and_carries_what_the_predictor_needs(run, exported):
    folder, model = run
    assert exported.path == folder / "best.onnx" and exported.input_size == (64, 96) and exported.dynamic_size
    assert exported.folded_bn > 20 and exported.max_abs_diff <= 1e-4
    assert sorted(p.name for p in folder.iterdir()) == ["best.json", "best.onnx", "best.safetensors"]  # no temporary
    meta = read_metadata(exported.path)
    assert meta["task"] == "segmentation" and json.loads(meta["class_names"]) == CLASSES
    assert json.loads(meta["colors"]) == COLORS and json.loads(meta["mean"]) == MEAN
    assert json.loads(meta["std"]) == STD and json.loads(meta["input_size"]) == [64, 96]
    assert json.loads(meta["outputs"]) == ["logits"] and json.loads(meta["model_args"]) == model.config
    assert fixed_input_size(exported.path) is None


@pytest.mark.parametrize("size", [(64, 96), (50, 77)])  # the export's size, and another one: height, width free
def test_onnx_class_maps_are_pytorch_argmax(run, exported, size, one_thread):
    _, model = run
    picture = image(*size)
    segmenter = OnnxSegmenter(exported.path, threads=1)
    assert segmenter.classes == CLASSES and segmenter.colors.tolist() == COLORS
    got = segmenter(picture)
    logits = torch_logits(model, picture)
    top2 = np.sort(logits, axis=0)[-2:]
    clear = top2[1] - top2[0] > 1e-4  # where rounding cannot swap the top two classes
    assert got.shape == size and got.dtype == np.uint8
    assert clear.mean() > 0.99 and (got == logits.argmax(0))[clear].all()
    assert len(np.unique(got)) == len(CLASSES)


def test_a_fixed_size_graph_gets_resized_images(exported, one_thread):
    segmenter = OnnxSegmenter(exported.path, threads=1)
    segmenter.fixed_size = (64, 96)  # as another exporter's file would be
    picture = image(40, 60, seed=1)
    got = segmenter(picture)
    resized = np.asarray(Image.fromarray(picture).resize((96, 64), Image.Resampling.BILINEAR))
    at_size = segmenter(resized)
    assert got.shape == (40, 60)
    assert (got == np.asarray(Image.fromarray(at_size).resize((60, 40), Image.Resampling.NEAREST))).all()


def test_other_files_are_refused_in_one_line(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g", [value],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.metadata_props.add(key="task", value="detection")
    onnx.save(proto, str(tmp_path / "detector.onnx"))
    assert fixed_input_size(tmp_path / "detector.onnx") == (8, 8)
    with pytest.raises(LightnetsError, match="not an exported segmenter") as err:
        OnnxSegmenter(tmp_path / "detector.onnx")
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="no .onnx file") as err:
        OnnxSegmenter(tmp_path / "nowhere.onnx")
    assert "\n" not in str(err.value)
    with pytest.raises(LightnetsError, match="path of the .onnx file"):
        export_segmenter(create_segmenter("mobilenetv3_small_075", 2))


def test_a_failed_numeric_check_writes_nothing(tmp_path, run, exported, monkeypatch):
    _, model = run

    def off_by_a_little(path, inputs, dynamic_batch=False):
        with torch.no_grad():
            return [model(torch.from_numpy(inputs)).numpy() + 0.01]

    monkeypatch.setattr(deploy, "export_graph",
                        lambda module, example, path, opset, **axes: shutil.copy(exported.path, path))
    monkeypatch.setattr(deploy, "run_outputs", off_by_a_little)
    target = tmp_path / "out" / "segmenter.onnx"
    with pytest.raises(LightnetsError, match=r"numeric check: max \|logit difference\| 0.01 > .* at 64x96"):
        export_segmenter(model, target)
    assert list(target.parent.iterdir()) == []


def test_latency_rows_are_timed_side_by_side(run, exported, monkeypatch):
    specs = [{"name": "lraspp", "backbone": "mobilenetv3_small_075", "num_classes": 3},
             {"name": "fcn", "backbone": "mobilenetv3_small_075", "num_classes": 3, "head": "fcn"}]
    rows = segmenter_latency(specs, sizes=[(64, 96)], backends=["eager"], threads=1, min_time=0.1)
    assert [(r.name, r.backend, r.input_size, r.status) for r in rows] == [("lraspp", "eager", (64, 96), "ok"),
                                                                           ("fcn", "eager", (64, 96), "ok")]
    assert rows[0].vs_first == 1.0 and all(r.timing.median_ms > 0 and r.params > 0 and r.macs > 0 for r in rows)
    assert rows[0].threads == 1

    _, model = run  # the deploy path on a ready file, beside eager
    rows = time_segmenters({"ours": model}, (64, 96), ["eager", "onnxruntime"], threads=1, min_time=0.1,
                           onnx_paths={"ours": exported.path})
    assert [r.backend for r in rows] == ["eager", "onnxruntime"] and rows[1].timing.median_ms > 0

    monkeypatch.setattr(latency, "backend_missing", lambda name: "onnxruntime is not installed" if name != "eager"
                        else None)
    rows = time_segmenters({"ours": model}, (64, 96), ["eager", "onnxruntime"], threads=1, min_time=0.05)
    assert rows[1].status == "skipped: onnxruntime is not installed" and rows[1].timing is None
    monkeypatch.undo()
    with pytest.raises(LightnetsError, match="give its ONNX file in onnx_paths"):
        time_segmenters({"peer": nn.Conv2d(3, 3, 1)}, (32, 32), ["onnxruntime"])
