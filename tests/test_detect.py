"""CenterNet: the model's outputs, targets on known boxes, the focal loss by hand, exact decoding, the letterbox
and its inverse, and augmentation that moves boxes with the pixels."""

import math

import numpy as np
import pytest
import torch

from lightnets import LightnetsError
from lightnets.detect import (
    DetectionAugment,
    DetectionBatch,
    DetectionTask,
    build_targets,
    centernet_loss,
    create_detector,
    decode,
    focal_loss,
    gaussian_radius,
    letterbox_image,
    letterbox_transform,
    network_input,
    to_image_boxes,
    to_input_boxes,
)


@pytest.mark.parametrize("backbone,stacks", [("mobilenetv3_small_075", 2), ("mobilenetv1_025_cifar", 3)])
def test_model_outputs_one_prediction_per_stack_at_stride_4(backbone, stacks):
    model = create_detector(backbone, num_classes=5, stacks=stacks)
    outputs = model(torch.randn(2, 3, 96, 64))
    assert len(outputs) == stacks
    for out in outputs:
        assert out["heatmap"].shape == (2, 5, 24, 16)
        assert out["size"].shape == out["offset"].shape == (2, 2, 24, 16)
        # The heatmap starts near the prior 0.1 everywhere, so the first focal losses are small.
        assert out["heatmap"].sigmoid().mean().item() == pytest.approx(0.1, abs=0.02)
    assert model.config["backbone"] == backbone and model.config["stacks"] == stacks


def test_model_drops_the_classifier_and_refuses_bad_arguments():
    model = create_detector("mobilenetv3_small_075", num_classes=1, width_mult=0.5)
    assert not any(name.startswith("backbone.head") for name, _ in model.named_parameters())
    with pytest.raises(LightnetsError, match="stacks must be an integer >= 1"):
        create_detector("mobilenetv3_small_075", num_classes=1, stacks=0)
    with pytest.raises(LightnetsError, match="num_classes"):
        create_detector("mobilenetv3_small_075", num_classes=0)
    with pytest.raises(LightnetsError, match="power of two"):
        create_detector("mobilenetv3_small_075", num_classes=1, output_stride=3)
    with pytest.raises(LightnetsError, match="unknown model"):
        create_detector("mobilnetv3_small", num_classes=1)


def test_every_stack_is_supervised():
    model = create_detector("mobilenetv3_small_075", num_classes=2, stacks=2)
    boxes = torch.tensor([[8.0, 8.0, 40.0, 30.0]])
    batch = DetectionBatch(torch.randn(1, 3, 64, 64), boxes, torch.tensor([1]), torch.tensor([0]),
                           torch.tensor([[1.0, 1.0, 0.0, 0.0]]), torch.tensor([0]))
    loss, parts = DetectionTask()(model, batch)
    loss.backward()
    assert set(parts) == {"heatmap", "size", "offset", "stack0", "stack1"}
    assert loss.item() == pytest.approx((parts["stack0"] + parts["stack1"]).item(), rel=1e-5)
    assert model.heads.heatmap[-1].weight.grad.abs().sum() > 0
    assert model.refinements[0].heads.heatmap[-1].weight.grad.abs().sum() > 0


def test_gaussian_radius_by_hand():
    # r = sqrt(t^2 s^2 + 4 t (1 - t) h w) - t s with t = 0.7, s = h + w.
    radius = gaussian_radius(torch.tensor([4.0, 10.0, 3.0]), torch.tensor([4.0, 10.0, 40.0]))
    expected = [math.sqrt(0.49 * 64 + 0.84 * 16) - 5.6,  # 1.093
                math.sqrt(0.49 * 400 + 0.84 * 100) - 14.0,  # 2.733
                math.sqrt(0.49 * 43**2 + 0.84 * 120) - 0.7 * 43]  # 1.630
    assert radius.tolist() == pytest.approx(expected, rel=1e-6)


def test_targets_on_known_boxes():
    # At stride 4: a 16x16 box is 4x4 output pixels (radius 1), a 40x40 box 10x10 (radius 2).
    boxes = torch.tensor([[8.0, 8.0, 24.0, 24.0], [42.0, 2.0, 82.0, 42.0], [0.0, 0.0, 16.0, 16.0]])
    labels, index = torch.tensor([0, 1, 0]), torch.tensor([0, 0, 1])
    t = build_targets(boxes, labels, index, batch_size=2, num_classes=2, output_size=(16, 32), stride=4)
    peaks = (t["heatmap"] == 1).nonzero().tolist()
    assert peaks == [[0, 0, 4, 4], [0, 1, 5, 15], [1, 0, 2, 2]]  # (image, class, y, x)

    first = t["heatmap"][0, 0]
    sigma = 3 / 6  # (2r + 1) / 6 with r = 1
    assert first[4, 5].item() == pytest.approx(math.exp(-1 / (2 * sigma**2)))
    assert first[5, 5].item() == pytest.approx(math.exp(-2 / (2 * sigma**2)))
    assert first[4, 6].item() == 0.0  # beyond the radius
    second = t["heatmap"][0, 1]
    sigma = 5 / 6
    assert second[5, 13].item() == pytest.approx(math.exp(-4 / (2 * sigma**2)))
    assert second[5, 12].item() == 0.0
    assert t["heatmap"][1, 1].sum() == 0

    assert t["mask"].sum() == 3
    assert t["size"][0, :, 5, 15].tolist() == [10.0, 10.0]
    assert t["offset"][0, :, 5, 15].tolist() == [0.5, 0.5]  # center (15.5, 5.5) in output pixels
    assert t["offset"][0, :, 4, 4].tolist() == [0.0, 0.0]


def test_targets_take_the_maximum_where_splats_overlap():
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0], [8.0, 0.0, 48.0, 40.0]])
    t = build_targets(boxes, torch.tensor([0, 0]), torch.tensor([0, 0]), batch_size=1, num_classes=1,
                      output_size=(10, 12), stride=4)
    row = t["heatmap"][0, 0, 5]
    assert row[5].item() == 1 and row[7].item() == 1
    assert row[6].item() == pytest.approx(math.exp(-1 / (2 * (5 / 6) ** 2)))


def test_focal_loss_by_hand():
    # Three pixels: a center predicted 0.8, a neighbour (target 0.5) predicted 0.5, background predicted 0.2.
    logits = torch.tensor([math.log(4.0), 0.0, math.log(0.25)])
    target = torch.tensor([1.0, 0.5, 0.0])
    center = (1 - 0.8) ** 2 * math.log(0.8)
    neighbour = (1 - 0.5) ** 4 * 0.5**2 * math.log(0.5)
    background = 0.2**2 * math.log(0.8)
    assert focal_loss(logits, target).item() == pytest.approx(-(center + neighbour + background))
    # Two centers: the sum is divided by 2; no center at all: by 1.
    two = torch.tensor([1.0, 1.0, 0.0])
    assert focal_loss(logits, two).item() == pytest.approx(-(center + (0.5**2) * math.log(0.5) + background) / 2)
    assert focal_loss(logits[1:], target[1:]).item() == pytest.approx(-(neighbour + background))
    # Saturated logits stay finite.
    assert torch.isfinite(focal_loss(torch.tensor([-100.0, 100.0]), torch.tensor([1.0, 0.0])))


def test_size_and_offset_losses_count_centers_only():
    targets = build_targets(torch.tensor([[0.0, 0.0, 8.0, 12.0]]), torch.tensor([0]), torch.tensor([0]),
                            batch_size=1, num_classes=1, output_size=(4, 4), stride=4)
    outputs = [{"heatmap": torch.full((1, 1, 4, 4), -50.0), "size": torch.full((1, 2, 4, 4), 5.0),
                "offset": torch.zeros(1, 2, 4, 4)}]
    total, parts = centernet_loss(outputs, targets)
    # Size target (2, 3) against 5: |5-2| and |5-3| averaged; offset target (0, 0.5) against 0.
    assert parts["size"].item() == pytest.approx(2.5)
    assert parts["offset"].item() == pytest.approx(0.25)
    assert total.item() == pytest.approx(parts["heatmap"].item() + 0.1 * 2.5 + 0.25)


def maps_from_targets(targets):
    return {"heatmap": torch.logit(targets["heatmap"].clamp(1e-6, 1 - 1e-6)), "size": targets["size"],
            "offset": targets["offset"]}


def objects(boxes, labels):
    return {(tuple(b), int(c)) for b, c in zip(boxes.tolist(), labels.tolist(), strict=True)}


def test_decoding_a_known_heatmap_recovers_the_boxes_exactly():
    # Coordinates whose centers and sizes in output pixels are exact binary fractions.
    boxes = torch.tensor([[10.0, 22.0, 31.0, 47.0], [60.0, 4.0, 100.0, 20.0], [70.0, 50.0, 90.0, 62.0],
                          [2.0, 2.0, 14.0, 30.0]])
    labels, index = torch.tensor([0, 2, 1, 2]), torch.tensor([0, 0, 0, 1])
    t = build_targets(boxes, labels, index, batch_size=2, num_classes=3, output_size=(16, 32), stride=4)
    found = decode(maps_from_targets(t), stride=4, score_threshold=0.5)
    for image, detections in enumerate(found):
        assert objects(detections.boxes, detections.labels) == objects(boxes[index == image], labels[index == image])
        assert torch.all(detections.scores > 0.99)


def test_decoding_keeps_thousands_of_peaks_when_asked():
    heat = torch.full((1, 1, 128, 128), -20.0)
    heat[0, 0, ::2, ::2] = 5.0  # 4096 isolated peaks
    maps = {"heatmap": heat, "size": torch.ones(1, 2, 128, 128), "offset": torch.zeros(1, 2, 128, 128)}
    assert len(decode(maps, stride=4)[0]) == 100
    assert len(decode(maps, stride=4, top_k=5000)[0]) == 4096
    assert len(decode(maps, stride=4, top_k=5000, score_threshold=0.999)[0]) == 0


def test_decoding_treats_a_negative_size_as_zero():
    heat = torch.full((1, 1, 8, 8), -20.0)
    heat[0, 0, 3, 5] = 5.0
    maps = {"heatmap": heat, "size": torch.full((1, 2, 8, 8), -2.0), "offset": torch.zeros(1, 2, 8, 8)}
    (found,) = decode(maps, stride=4)
    assert found.boxes.tolist() == [[20.0, 12.0, 20.0, 12.0]]


def test_letterbox_places_pixels_where_its_transform_says_and_inverts():
    image = np.zeros((100, 200, 3), np.uint8)
    image[20:60, 50:90] = 255
    boxed, transform = letterbox_image(image, 100)
    assert transform == (0.5, 0.5, 0.0, 25.0)
    assert letterbox_transform(200, 100, 100) == transform
    rows, cols = np.nonzero(boxed[..., 0] > 127)
    found = torch.tensor([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], dtype=torch.float32)
    original = torch.tensor([[50.0, 20.0, 90.0, 60.0]])
    assert torch.equal(to_input_boxes(original, torch.tensor(transform)), found)
    assert torch.equal(to_image_boxes(found, torch.tensor(transform)), original)
    # The padding is the mean colour: zero once normalised.
    pad = network_input(torch.from_numpy(boxed).permute(2, 0, 1)[None])[0, :, :20]
    assert pad.abs().max() < 0.01


def test_decoding_maps_boxes_back_through_the_letterbox():
    original = torch.tensor([[37.0, 11.0, 141.0, 83.0], [150.0, 10.0, 190.0, 30.0]])
    transform = torch.tensor(letterbox_transform(200, 90, 64))
    boxes = to_input_boxes(original, transform)
    t = build_targets(boxes, torch.tensor([0, 0]), torch.tensor([0, 0]), batch_size=1, num_classes=1,
                      output_size=(16, 16), stride=4)
    found = decode(maps_from_targets(t), stride=4, score_threshold=0.5, transforms=transform[None],
                   image_sizes=torch.tensor([[200.0, 90.0]]))[0]
    order = found.boxes[:, 0].argsort()
    assert torch.allclose(found.boxes[order], original, atol=1e-3)


def test_augmentation_moves_boxes_with_the_pixels():
    images = torch.zeros(6, 3, 64, 64, dtype=torch.uint8)
    boxes = torch.tensor([[20.0, 16.0, 44.0, 40.0]]).repeat(6, 1)
    for i in range(6):
        images[i, :, 16:40, 20:44] = 255
    augment = DetectionAugment(scale=(0.5, 1.5), flip=0.5, brightness=0, contrast=0, saturation=0)
    x, moved, labels, index = augment(images, boxes, torch.zeros(6, dtype=torch.long), torch.arange(6),
                                      generator=torch.Generator().manual_seed(0))
    assert x.shape == (6, 3, 64, 64) and index.tolist() == list(range(6))
    white = x[:, 0] > 0
    for i in range(6):
        rows, cols = torch.nonzero(white[i], as_tuple=True)
        found = torch.tensor([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=torch.float32)
        assert torch.allclose(found, moved[i], atol=1.01), (i, found, moved[i])


def test_augmentation_keeps_boxes_mostly_on_the_canvas_clipped_and_checks_its_settings():
    images = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    cells = torch.arange(0, 64, 8.0)
    y, x = torch.meshgrid(cells, cells, indexing="ij")
    boxes = torch.stack([x.flatten(), y.flatten(), x.flatten() + 8, y.flatten() + 8], dim=1)  # an 8x8 grid
    none = torch.zeros(64, dtype=torch.long)
    # Zoomed in 2x: a quarter of the page stays in view, 4x4 whole cells plus at most a row and a column of halves.
    _, kept, _, _ = DetectionAugment(scale=(2.0, 2.0))(images, boxes, none, none,
                                                       generator=torch.Generator().manual_seed(1))
    assert 16 <= len(kept) <= 25
    assert kept.min() >= 0 and kept.max() <= 64
    assert torch.all((kept[:, 2:] - kept[:, :2]) >= 8 - 1e-4)  # each at least half of its 16x16 zoomed size
    for bad in ({"scale": (0.0, 1.0)}, {"flip": 1.5}, {"brightness": 1.0}):
        with pytest.raises(LightnetsError):
            DetectionAugment(**bad)
