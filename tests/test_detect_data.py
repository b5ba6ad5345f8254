"""Detection data and metrics: synthetic pages read back in both formats (directory and archives), one clear
error per bad record, the letterboxed cache, COCO mAP and the Kuzushiji F1 on hand-made cases."""

import json
import tarfile
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from lightnets import LightnetsError
from lightnets.detect import (
    DetectionCache,
    Detections,
    coco_map,
    kuzushiji_f1,
    read_coco,
    read_detection_data,
    read_kuzushiji,
    synthetic_pages,
)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    return synthetic_pages(tmp_path_factory.mktemp("pages"), 3, size=(160, 128), char_sizes=(12, 20), seed=1)


def sorted_objects(record, class_names):
    pairs = zip(record.boxes.tolist(), record.labels.tolist(), strict=True)
    return sorted((tuple(b), class_names[c]) for b, c in pairs)


def test_synthetic_pages_read_back_the_same_in_both_formats(pages):
    coco, kuzushiji = read_coco(pages), read_kuzushiji(pages)
    assert len(coco) == len(kuzushiji) == 3
    assert all(name.startswith("U+") for name in kuzushiji.class_names)
    for a, b in zip(coco.records, kuzushiji.records, strict=True):
        assert (a.width, a.height) == (b.width, b.height) == (160, 128)
        assert len(a.labels) > 10
        assert sorted_objects(a, coco.class_names) == [
            (box, chr(int(code[2:], 16))) for box, code in sorted_objects(b, kuzushiji.class_names)]
    agnostic = read_kuzushiji(pages, class_agnostic=True)
    assert agnostic.class_names == ["object"] and all((r.labels == 0).all() for r in agnostic.records)
    assert read_detection_data(pages).class_names == coco.class_names


def test_synthetic_boxes_hold_the_ink(pages):
    dataset = read_coco(pages)
    image = dataset.load_image(0).astype(int)
    ink = image.sum(2) < 300
    covered = np.zeros_like(ink)
    for x1, y1, x2, y2 in dataset.records[0].boxes.astype(int):
        assert ink[y1:y2, x1:x2].any()
        covered[y1:y2, x1:x2] = True
    assert not (ink & ~covered).any()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archives_read_like_directories(pages, tmp_path, kind):
    archive = tmp_path / f"pages.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z:
            for path in pages.rglob("*"):
                z.write(path, f"top/{path.relative_to(pages)}")
    else:
        with tarfile.open(archive, "w:gz") as t:
            t.add(pages, arcname="./top")
    for reader in (read_coco, read_kuzushiji):
        from_dir, from_archive = reader(pages), reader(archive)
        assert [r.boxes.tolist() for r in from_dir.records] == [r.boxes.tolist() for r in from_archive.records]
        cache = DetectionCache(from_archive, 64)
        assert np.array_equal(cache.images[1].permute(1, 2, 0).numpy().shape, (64, 64, 3))


def write_coco(directory, images, annotations, categories=({"id": 1, "name": "a"},)):
    directory.mkdir(exist_ok=True)
    for image in images:
        Image.new("RGB", (image["width"], image["height"])).save(directory / image["file_name"])
    (directory / "ann.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": list(categories)}))
    return directory


IMAGE = {"id": 7, "file_name": "a.png", "width": 50, "height": 40}


@pytest.mark.parametrize("annotation,message", [
    ({"bbox": [30, 10, 25, 10]}, r"annotation id 1 \(image id 7\): box \[x=30.0, y=10.0, w=25.0, h=10.0\] "
                                 r"lies outside its 50x40 image"),
    ({"bbox": [5, 5, -3, 4]}, "annotation id 1 .*non-positive size"),
    ({"category_id": 9}, r"annotation id 1 \(image id 7\): unknown category id 9; the categories are \[1\]"),
    ({"image_id": 8}, "annotation id 1 .*no image with that id"),
])
def test_coco_errors_name_the_record(tmp_path, annotation, message):
    write_coco(tmp_path / "d", [IMAGE], [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5],
                                         **annotation}])
    with pytest.raises(LightnetsError, match=message):
        read_coco(tmp_path / "d")


def test_coco_missing_image_crowd_skip_and_edge_tolerance(tmp_path):
    root = write_coco(tmp_path / "d", [IMAGE], [
        {"id": 1, "image_id": 7, "category_id": 1, "bbox": [40, 30, 10.5, 10.4]},  # overhangs by < 1 px: clipped
        {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 50, 40], "iscrowd": 1},
    ])
    dataset = read_coco(root)
    assert dataset.records[0].boxes.tolist() == [[40.0, 30.0, 50.0, 40.0]]
    assert dataset.skipped == {"crowd annotations": 1}
    (root / "a.png").unlink()
    with pytest.raises(LightnetsError, match=r"image id 7 \('a.png'\) is listed in ann.json but missing"):
        read_coco(root)


def test_a_resized_image_is_refused_when_cached(tmp_path):
    root = write_coco(tmp_path / "d", [IMAGE], [])
    Image.new("RGB", (60, 40)).save(root / "a.png")
    with pytest.raises(LightnetsError, match="'a.png' .* is 60x40, but its annotations say 50x40"):
        DetectionCache(read_coco(root), 64)


def write_kuzushiji(directory, labels, translation=None):
    directory.mkdir(exist_ok=True)
    Image.new("RGB", (50, 40)).save(directory / "p1.jpg")
    (directory / "train.csv").write_text(f"image_id,labels\np1,{labels}\n")
    if translation:
        (directory / "unicode_translation.csv").write_text("Unicode,char\n" + translation)
    return directory


@pytest.mark.parametrize("labels,translation,message", [
    ("U+0041 1 1 5", None, r"train.csv line 2 \(page 'p1'\): labels must be groups of 'U\+XXXX x y w h', got 4"),
    ("U+0041 40 1 20 5", None, r"train.csv line 2 \(page 'p1'\), character U\+0041: box .* lies outside"),
    ("U+0041 1 1 0 5", None, "character U\\+0041: box .* non-positive size"),
    ("U+0041 1 1 a 5", None, "is not four numbers"),
    ("U+0042 1 1 5 5", "U+0041,A\n", r"character U\+0042: unknown character code, not in unicode_translation.csv"),
])
def test_kuzushiji_errors_name_the_record(tmp_path, labels, translation, message):
    with pytest.raises(LightnetsError, match=message):
        read_kuzushiji(write_kuzushiji(tmp_path / "d", labels, translation))


def test_kuzushiji_empty_pages_and_missing_images(tmp_path):
    root = write_kuzushiji(tmp_path / "d", "")
    assert len(read_kuzushiji(root).records[0].labels) == 0
    (root / "p1.jpg").unlink()
    with pytest.raises(LightnetsError, match=r"train.csv line 2: page 'p1' has no image"):
        read_kuzushiji(root)
    with pytest.raises(LightnetsError, match="does not exist"):
        read_coco(tmp_path / "nowhere")


def test_cache_batches_gather_their_own_boxes(pages):
    dataset = read_coco(pages)
    cache = DetectionCache(dataset, 64)
    batch = cache.batch(torch.tensor([2, 0]))
    assert batch.images.shape == (2, 3, 64, 64) and batch.images.dtype == torch.uint8
    # 160x128 pages letterboxed to 64: resized to 64x51 (the scales of those pixels), 6 rows of padding on top.
    sx, sy = 64 / 160, 51 / 128
    assert batch.transforms[0].tolist() == pytest.approx([sx, sy, 0.0, 6.0])
    for slot, index in enumerate([2, 0]):
        expected = torch.from_numpy(dataset.records[index].boxes) * torch.tensor([sx, sy, sx, sy]) + torch.tensor(
            [0.0, 6.0, 0.0, 6.0])
        assert torch.allclose(batch.boxes[batch.batch_index == slot], expected)
    assert sum(len(b.labels) for b in cache.batches(2)) == len(cache.labels)


def detections(boxes, labels, scores):
    return Detections(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores), torch.tensor(labels))


class Truth:
    def __init__(self, boxes, labels):
        self.boxes, self.labels = np.array(boxes, np.float32), np.array(labels)


def test_coco_map_by_hand():
    truth = [Truth([[10, 10, 50, 50], [60, 60, 100, 100]], [0, 0])]
    exact = [detections([[10, 10, 50, 50], [60, 60, 100, 100]], [0, 0], [0.9, 0.8])]
    assert coco_map(truth, exact, num_classes=1)["map"] == pytest.approx(1.0)
    # One hit then one false positive: precision 1 up to recall 0.5, so 51 of COCO's 101 recall points.
    half = [detections([[10, 10, 50, 50], [200, 200, 240, 240]], [0, 0], [0.9, 0.8])]
    result = coco_map(truth, half, num_classes=1)
    assert result["map50"] == pytest.approx(51 / 101)
    assert result["map_medium"] == pytest.approx(51 / 101) and result["map_small"] == -1.0
    assert coco_map(truth, [detections(np.zeros((0, 4)), [], [])], num_classes=1)["map"] == 0.0


def test_kuzushiji_f1_by_hand():
    truth = [Truth([[0, 0, 10, 10], [20, 0, 30, 10]], [0, 1])]
    found = [detections([[2, 2, 8, 8],  # center (5, 5) in the first box, same label: a hit
                         [21, 1, 29, 9],  # in the second box but the wrong label: a miss
                         [0, 0, 10, 10],  # the first box again, already matched: a miss
                         [100, 100, 110, 110]],  # scores below the threshold: not counted
                        [0, 0, 0, 0], [0.9, 0.8, 0.7, 0.1])]
    result = kuzushiji_f1(truth, found, score_threshold=0.3)
    assert result == pytest.approx({"f1": 2 * 1 / (3 + 2), "precision": 1 / 3, "recall": 1 / 2})


def test_metrics_refuse_mismatched_lengths():
    with pytest.raises(LightnetsError, match="1 ground-truth images but 0 detection lists"):
        kuzushiji_f1([Truth([[0, 0, 1, 1]], [0])], [])
