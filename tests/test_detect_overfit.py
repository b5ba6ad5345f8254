"""A tiny two-stack CenterNet trained through the shared loop fits four synthetic pages perfectly: the model,
targets, loss, decoding and the loop's integration agree."""

import pytest
import torch

from lightnets.detect import DETECTION_RECIPE, read_coco, synthetic_pages, train_detector

pytest.importorskip("faster_coco_eval")


def test_tiny_model_overfits_four_pages(tmp_path, one_thread):
    torch.manual_seed(0)
    pages = read_coco(synthetic_pages(tmp_path / "pages", 4, size=(128, 128), char_sizes=(14, 24), alphabet="ABC"))
    recipe = DETECTION_RECIPE.replace(epochs=5, batch_size=4, lr=3e-3, wd=0.0, schedule="constant", warmup=0.0)
    result = train_detector(pages, "mobilenetv3_small_075", val_data=pages, input_size=128, stacks=2, recipe=recipe,
                            augment=None, repeat=30, out=tmp_path / "run", progress=False)
    assert len(result.history) == 5 and result.history[-1]["step"] == 150
    assert result.metrics["map50"] == 1.0
    assert result.metrics["f1"] == 1.0
    assert {"val_map50", "val_f1", "train_heatmap", "train_stack1"} <= set(result.history[-1])
    assert (tmp_path / "run" / "best.safetensors").is_file()
