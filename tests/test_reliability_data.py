"""Reliability of the data readers (issue 23): no silent wrong result, no unbounded or blocking read.

Each test builds its bad input itself: relabelled folders behind the cache, 16-bit PNGs, archives with huge
members, FIFOs named like images, one-class folders, plain folders for eval, and bad detection records.
"""

import io
import json
import os
import signal
import tarfile
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image

from lightnets import LightnetsError
from lightnets.cli import main
from lightnets.data import folder as folder_module
from lightnets.data import load_data
from lightnets.detect import DetectionCache, FileSource, read_coco, read_kuzushiji
from lightnets.models import create_model
from lightnets.train.checkpoint import save_checkpoint
from lightnets.train.recipes import Recipe


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNETS_CACHE", str(tmp_path / "cache"))


class Blocked(BaseException):
    """Not an ``Exception``, so no reader's ``except Exception`` can take it for a bad image."""


@contextmanager
def deadline(seconds):
    """Fail (instead of hanging the suite) when the block blocks: the alarm interrupts a blocking open()."""
    def expire(signum, frame):
        raise Blocked(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def write_png(path, value, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def plain_folder(root, classes=("cat", "dog"), n=3):
    """``<class>/<i>.png``; every image of class c is grey level 10 + 100 * c, so labels can be read off pixels."""
    for c, name in enumerate(classes):
        for i in range(n):
            write_png(root / name / f"{i}.png", 10 + 100 * c)
    return root


def grey_of_label(data):
    """``{label: set of grey levels}`` of the training split."""
    out = {}
    for image, label in zip(data.train.images, data.train.labels.tolist(), strict=True):
        out.setdefault(label, set()).add(int(image[0, 0, 0]))
    return out


# 1. The decoded-data cache


def test_cache_notices_a_swap_of_class_folders(tmp_path):
    root = plain_folder(tmp_path / "d")
    assert grey_of_label(load_data(root, val_split=0.5)) == {0: {10}, 1: {110}}  # cat dark, dog light
    # Swap the names: same files, sizes and mtimes, but every label is now the other one.
    (root / "cat").rename(root / "tmp")
    (root / "dog").rename(root / "cat")
    (root / "tmp").rename(root / "dog")
    assert grey_of_label(load_data(root, val_split=0.5)) == {0: {110}, 1: {10}}


def test_cache_notices_an_image_moved_to_another_class(tmp_path):
    root = plain_folder(tmp_path / "d", n=4)
    before = load_data(root, val_split=0.25)
    assert torch.bincount(torch.cat([before.train.labels, before.test.labels])).tolist() == [4, 4]
    os.rename(root / "cat" / "0.png", root / "dog" / "moved.png")
    after = load_data(root, val_split=0.25)
    assert torch.bincount(torch.cat([after.train.labels, after.test.labels])).tolist() == [3, 5]


# 2. 16-bit PNGs


def sixteen_bit_png(path):
    """A 16-bit grey PNG (mode I;16) with a ramp 0..65535, and the 8-bit values it must decode to."""
    ramp = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ramp).save(path)
    with Image.open(path) as img:
        assert img.mode == "I;16"
    return np.rint(ramp / 257).astype(np.uint8)


def test_16_bit_png_is_scaled_not_white_for_classification(tmp_path):
    expected = sixteen_bit_png(tmp_path / "d" / "train" / "a" / "ramp.png")
    write_png(tmp_path / "d" / "train" / "b" / "x.png", 3, size=(16, 16))
    write_png(tmp_path / "d" / "test" / "a" / "y.png", 3, size=(16, 16))
    data = load_data(tmp_path / "d", strict=True)
    ramp = data.train.images[data.train.labels.tolist().index(0)]
    for channel in ramp:
        assert np.array_equal(channel.numpy(), expected)
    assert int(ramp.min()) == 0 and int(ramp.max()) == 255 and len(set(ramp[0].flatten().tolist())) > 200


def test_16_bit_png_is_scaled_not_white_for_detection(tmp_path):
    root = tmp_path / "coco"
    expected = sixteen_bit_png(root / "ramp.png")
    (root / "ann.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "ramp.png", "width": 16, "height": 16}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 5, 5]}],
        "categories": [{"id": 1, "name": "a"}]}))
    image = read_coco(root).load_image(0)
    assert np.array_equal(image[..., 0], expected) and np.array_equal(image[..., 2], expected)


# 3. Archives and non-regular files


def tar_add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def png_bytes(value, noise=False):
    pixels = np.random.default_rng(value).integers(0, 256, (48, 48, 3), dtype=np.uint8) if noise else \
        np.full((8, 8, 3), value, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_archive_reads_only_images_and_bounds_their_size(tmp_path, monkeypatch):
    path = tmp_path / "data.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for c, name in enumerate(("cat", "dog")):
            tar_add(tar, f"train/{name}/0.png", png_bytes(10 + 100 * c))
            tar_add(tar, f"test/{name}/0.png", png_bytes(10 + 100 * c))
        tar_add(tar, "train/cat/notes.bin", bytes(4 << 20))  # not an image: must not be read
        tar_add(tar, "train/dog/huge.png", png_bytes(1, noise=True))  # over the (lowered) image limit
    assert len(png_bytes(1, noise=True)) > 4000 > len(png_bytes(10))
    monkeypatch.setattr(folder_module, "MAX_IMAGE_BYTES", 4000, raising=False)
    opened = []
    extract = tarfile.TarFile.extractfile

    def spy(self, member):
        opened.append(member.name if isinstance(member, tarfile.TarInfo) else member)
        return extract(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", spy)
    data = load_data(path, cache=False)
    assert sorted(opened) == ["test/cat/0.png", "test/dog/0.png", "train/cat/0.png", "train/dog/0.png"]
    assert data.skipped == ["train/dog/huge.png"] and len(data.train) == 2
    with pytest.raises(LightnetsError, match=r"cannot decode image train/dog/huge.png in .*over the"):
        folder_module.read_image_folder(path, strict=True)


def test_archive_damaged_midway_is_refused_not_read_in_part(tmp_path):
    path = tmp_path / "data.tar"
    with tarfile.open(path, "w") as tar:
        for i in range(4):
            for c, name in enumerate(("cat", "dog")):
                tar_add(tar, f"{name}/{i}.png", png_bytes(10 + 100 * c))
    with tarfile.open(path) as tar:
        offset = tar.getmembers()[4].offset
    raw = bytearray(path.read_bytes())
    raw[offset:offset + 512] = b"\x01" * 512  # the fifth header: tarfile would end the listing there
    path.write_bytes(bytes(raw))
    with pytest.raises(LightnetsError, match=r"data.tar is not a readable .tar or .tar.gz archive \(damaged data"):
        load_data(path, val_split=0.5)
    with pytest.raises(LightnetsError, match=r"cannot read .*data.tar: damaged data"):
        FileSource(path)


def test_fifo_named_like_an_image_is_skipped_not_waited_on(tmp_path):
    root = plain_folder(tmp_path / "d")
    os.mkfifo(root / "cat" / "stuck.jpg")
    with deadline(5):
        data = load_data(root, val_split=0.5)
        assert data.skipped == ["cat/stuck.jpg"] and len(data.train) + len(data.test) == 6
        with pytest.raises(LightnetsError, match="cannot decode image cat/stuck.jpg .*not a regular file"):
            folder_module.read_image_folder(root, strict=True)
        os.mkfifo(tmp_path / "data.tar")
        with pytest.raises(LightnetsError, match="data source .*data.tar is not a regular file or a directory"):
            load_data(tmp_path / "data.tar")
        with pytest.raises(LightnetsError, match="data.tar is not a regular file or a directory"):
            FileSource(tmp_path / "data.tar")


# 4. One class


def test_one_class_folder_is_refused_for_training_but_evaluated(tmp_path):
    root = plain_folder(tmp_path / "d", classes=("cat",))
    with pytest.raises(LightnetsError, match=r"d has one class, 'cat': training needs at least 2 class folders"):
        load_data(root, val_split=0.5)
    data = load_data(root, evaluation=True)
    assert data.classes == ["cat"] and len(data.test) == 3


# 5. eval on a plain folder, with its undecodable images counted


def test_eval_takes_a_plain_folder_and_counts_skipped_images(tmp_path, capsys):
    root = plain_folder(tmp_path / "d", n=2)
    (root / "dog" / "bad.png").write_bytes(b"not a png")
    net = create_model("mobilenetv1_025_cifar", num_classes=2)
    save_checkpoint(tmp_path / "ck", net.state_dict(), {
        "model": "mobilenetv1_025_cifar", "model_args": {}, "num_classes": 2, "classes": ["cat", "dog"],
        "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "recipe": Recipe().to_dict(), "speed": {},
        "data": str(root)})
    assert main(["eval", str(tmp_path / "ck.safetensors"), "--data", str(root)]) == 0
    printed = capsys.readouterr().out
    assert "skipped 1 undecodable image(s), first: dog/bad.png" in printed
    assert ", 4 images" in printed
    # With train/ and test/ folders, only the test folder's undecodable images concern the evaluation.
    split = tmp_path / "s"
    for part in ("train", "test"):
        plain_folder(split / part, n=2)
    (split / "train" / "cat" / "bad.png").write_bytes(b"x")
    (split / "test" / "dog" / "bad.png").write_bytes(b"x")
    assert load_data(split, evaluation=True).skipped == ["test/dog/bad.png"]


# 6. Detection records


IMAGE = {"id": 7, "file_name": "a.png", "width": 50, "height": 40}


def write_coco(directory, annotations, images=(IMAGE,)):
    directory.mkdir(exist_ok=True)
    for image in images:
        Image.new("RGB", (image["width"], image["height"])).save(directory / image["file_name"])
    (directory / "ann.json").write_text(json.dumps(
        {"images": list(images), "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}))
    return directory


@pytest.mark.parametrize("bbox,message", [
    ([float("nan"), 10, 5, 5], r"ann.json: annotation id 1 \(image id 7\): box \[x=nan, y=10.0, w=5.0, h=5.0\] "
                               "has a coordinate that is not a finite number"),
    ([10, float("nan"), 5, 5], "box .*y=nan.* not a finite number"),
    ([50, 10, 0.5, 5], r"box \[x=50.0, .*\] has no area inside its 50x40 image"),  # within the edge tolerance
    ([10, 10, 5], r"bbox \[10, 10, 5\] is not four numbers"),
])
def test_coco_refuses_boxes_that_are_not_finite_or_have_no_area(tmp_path, bbox, message):
    root = write_coco(tmp_path / "d", [{"id": 1, "image_id": 7, "category_id": 1, "bbox": bbox}])
    with pytest.raises(LightnetsError, match=message):
        read_coco(root)


def test_coco_refuses_duplicate_image_ids_and_drops_duplicate_annotations(tmp_path):
    ann = {"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5]}
    root = write_coco(tmp_path / "d", [ann, {**ann, "id": 2}, {**ann, "bbox": [9, 9, 5, 5], "id": 3}])
    dataset = read_coco(root)
    assert dataset.records[0].boxes.tolist() == [[1, 1, 6, 6], [9, 9, 14, 14]]
    assert dataset.skipped == {"duplicate annotations": 1}
    other = {**IMAGE, "file_name": "b.png", "width": 30}
    write_coco(tmp_path / "e", [ann], images=(IMAGE, other))
    with pytest.raises(LightnetsError, match=r"ann.json: image id 7 is listed twice \('a.png' and 'b.png'\)"):
        read_coco(tmp_path / "e")


def write_kuzushiji(directory, *rows):
    directory.mkdir(exist_ok=True)
    Image.new("RGB", (50, 40)).save(directory / "p1.jpg")
    Image.new("RGB", (50, 40)).save(directory / "p2.jpg")
    (directory / "train.csv").write_text("image_id,labels\n" + "".join(f"{r}\n" for r in rows))
    return directory


def test_kuzushiji_refuses_a_nan_box(tmp_path):
    root = write_kuzushiji(tmp_path / "d", "p1,U+0041 nan 10 5 5")
    with pytest.raises(LightnetsError, match=r"train.csv line 2 \(page 'p1'\), character U\+0041: box \[x=nan, "
                                             r"y=10.0, w=5.0, h=5.0\] has a coordinate that is not a finite number"):
        read_kuzushiji(root)


def test_kuzushiji_drops_duplicate_rows_and_refuses_conflicting_ones(tmp_path):
    root = write_kuzushiji(tmp_path / "d", "p1,U+0041 1 1 5 5", "p2,U+0041 2 2 5 5", "p1,U+0041 1 1 5 5")
    dataset = read_kuzushiji(root)
    assert [r.image_id for r in dataset.records] == ["p1", "p2"]
    assert dataset.records[0].boxes.tolist() == [[1, 1, 6, 6]] and dataset.skipped == {"duplicate csv rows": 1}
    write_kuzushiji(root, "p1,U+0041 1 1 5 5", "p1,U+0041 3 3 5 5")
    with pytest.raises(LightnetsError, match=r"train.csv lines 2 and 3 both give page 'p1', with different labels"):
        read_kuzushiji(root)


def test_a_corrupt_detection_image_is_one_clear_error(tmp_path):
    root = write_coco(tmp_path / "coco", [])
    (root / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(LightnetsError, match=r"cannot decode image 'a.png' \(id 7\)"):
        DetectionCache(read_coco(root), 64)
    page = write_kuzushiji(tmp_path / "kz", "p1,")
    (page / "p1.jpg").write_bytes(b"garbage")
    with pytest.raises(LightnetsError, match=r"cannot decode image 'p1.jpg' in .*kz"):
        read_kuzushiji(page)


def test_detection_archive_member_over_the_image_limit_is_refused(tmp_path, monkeypatch):
    root = write_coco(tmp_path / "d", [])
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(root / "a.png")
    with tarfile.open(tmp_path / "d.tar", "w") as tar:
        tar.add(root, arcname="")
    monkeypatch.setattr(folder_module, "MAX_IMAGE_BYTES", 1000, raising=False)
    with pytest.raises(LightnetsError, match=r"cannot read a.png in .*d.tar: .* over the"):
        DetectionCache(read_coco(tmp_path / "d.tar"), 64)
