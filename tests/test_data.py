"""Data: the CIFAR-10 archive, image folders in every container, bad input, the cache, augmentation, batches."""

import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lightnets import LightnetsError
from lightnets.data import (
    SAMPLE,
    Augment,
    ImageBatches,
    Split,
    cutout,
    load_data,
    random_crop,
    random_resized_crop,
    read_cifar10,
)
from lightnets.data import sources as sources_module
from lightnets.data.dataset import split_off

CLASSES = ["cat", "dog", "emu"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNETS_CACHE", str(tmp_path / "cache"))


def _tar_add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_cifar_archive(path, n_train=4, n_test=3, payload=None):
    """A tiny archive in the official layout (protocol-2 pickles of dicts of bytes keys)."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
            n = n_test if name == "test_batch" else n_train
            batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                     b"labels": [(i + k) % 10 for k in range(n)], b"batch_label": name.encode()}
            _tar_add(tar, f"cifar-10-batches-py/{name}", payload or pickle.dumps(batch, protocol=2))
        meta = {b"label_names": [f"class{i}".encode() for i in range(10)]}
        _tar_add(tar, "cifar-10-batches-py/batches.meta", pickle.dumps(meta, protocol=2))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar_archive_reads_and_checks_md5(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    md5 = make_cifar_archive(path)
    data = read_cifar10(path, md5=md5)
    assert data.train.images.shape == (20, 3, 32, 32) and data.test.images.shape == (3, 3, 32, 32)
    assert data.train.labels[:4].tolist() == [0, 1, 2, 3] and data.classes[3] == "class3"
    # The first training image is the first row of data_batch_1, in CIFAR's channel-major order.
    with tarfile.open(path) as tar:
        batch = pickle.loads(tar.extractfile("cifar-10-batches-py/data_batch_1").read(), encoding="bytes")
    assert torch.equal(data.train.images[0].flatten(), torch.from_numpy(batch[b"data"][0]))
    with pytest.raises(LightnetsError, match="md5 .* not the official CIFAR-10"):
        load_data(path)  # by path it must be the official archive


def test_cifar_archive_refuses_code_in_pickles(tmp_path):
    evil = pickle.dumps(os.system)  # a global outside numpy arrays: must never be resolved
    path = tmp_path / "evil.tar.gz"
    with pytest.raises(LightnetsError, match="data_batch_1 .* is not a CIFAR-10 batch"):
        read_cifar10(path, md5=make_cifar_archive(path, payload=evil))


def write_png(path, rgb, size=(32, 32)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def make_folder(root, n_train=3, n_test=2, wrap=None):
    base = root / wrap if wrap else root
    for c, cls in enumerate(CLASSES):
        for i in range(n_train):
            write_png(base / "train" / cls / f"{i}.png", (c * 80, i * 10, 5))
        for i in range(n_test):
            write_png(base / "test" / cls / f"{i}.png", (c * 80, 200 + i, 7))
    return root


def pack(root, path, mode):
    with tarfile.open(path, mode) as tar:
        tar.add(root, arcname="")
    return path


def test_image_folder_in_every_container_gives_the_same_tensors(tmp_path):
    root = make_folder(tmp_path / "d")
    data = load_data(root)
    assert data.classes == CLASSES and len(data.train) == 9 and len(data.test) == 6
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert data.train.images[4, :, 0, 0].tolist() == [80, 10, 5]  # dog/1.png, lossless
    for name, mode in (("d.tar", "w"), ("d.tar.gz", "w:gz")):
        packed = load_data(pack(root, tmp_path / name, mode))
        assert torch.equal(packed.train.images, data.train.images)
        assert torch.equal(packed.test.labels, data.test.labels)
    # A single wrapping folder (cifar10/train/...) is looked through.
    wrapped = load_data(pack(make_folder(tmp_path / "w", wrap="cifar10"), tmp_path / "w.tar.gz", "w:gz"))
    assert wrapped.classes == CLASSES and torch.equal(wrapped.train.images, data.train.images)


def test_any_image_size_is_resized_at_decode(tmp_path):
    write_png(tmp_path / "train" / "a" / "wide.png", (10, 20, 30), size=(120, 60))
    write_png(tmp_path / "train" / "b" / "small.png", (40, 50, 60), size=(16, 16))
    Image.new("L", (50, 50), 128).save(tmp_path / "train" / "b" / "gray.png")
    data = load_data(tmp_path, image_size=24, val_split=0.5)
    assert data.image_size == (24, 24) and len(data.train) + len(data.test) == 3
    assert data.train.images.dtype == torch.uint8


def test_corrupt_image_is_skipped_and_counted_or_stops_with_strict(tmp_path):
    root = make_folder(tmp_path / "d")
    (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    data = load_data(root)
    assert data.skipped == ["train/dog/broken.png"] and len(data.train) == 9
    with pytest.raises(LightnetsError, match="cannot decode image train/dog/broken.png"):
        load_data(root, strict=True)  # also from the cache


@pytest.mark.parametrize("breakage,message", [
    ("empty_class", "class folder train/fox .* has no images"),
    ("unknown_test_class", "test split .* has classes the training split lacks: yak"),
    ("no_test", "has no test .* --val-split"),
    ("not_an_archive", "is not a readable .tar or .tar.gz archive"),
    ("no_images", "no images found"),
    ("missing", "does not exist"),
])
def test_bad_sources_give_one_clear_error(tmp_path, breakage, message):
    root = make_folder(tmp_path / "d")
    source = root
    if breakage == "empty_class":
        (root / "train" / "fox").mkdir()
    elif breakage == "unknown_test_class":
        write_png(root / "test" / "yak" / "0.png", (1, 2, 3))
    elif breakage == "no_test":
        for f in (root / "test").rglob("*.png"):
            f.unlink()
        for d in sorted((root / "test").rglob("*"), reverse=True):
            d.rmdir()
        (root / "test").rmdir()
    elif breakage == "not_an_archive":
        source = tmp_path / "data.tar.gz"
        source.write_bytes(b"this is not gzip")
    elif breakage == "no_images":
        source = tmp_path / "empty"
        (source / "train" / "a").mkdir(parents=True)
        (source / "train" / "a" / "notes.txt").write_text("x")
    else:
        source = tmp_path / "nowhere"
    with pytest.raises(LightnetsError, match=message):
        load_data(source)


def test_val_split_is_seeded_and_stratified():
    labels = torch.arange(4).repeat_interleave(10)
    split = Split(torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 3, 2, 2).clone(), labels)
    train, val = split_off(split, 0.2, seed=1)
    again, _ = split_off(split, 0.2, seed=1)
    assert torch.bincount(val.labels).tolist() == [2, 2, 2, 2] and len(train) == 32
    assert torch.equal(train.images, again.images)
    with pytest.raises(LightnetsError, match="between 0 and 1"):
        split_off(split, 1.5, seed=0)


def test_cache_is_reused_and_invalidated_by_a_change(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "d")
    first = load_data(root)
    assert list((tmp_path / "cache" / "datasets").glob("*.safetensors"))

    def boom(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(sources_module, "read_image_folder", boom)
    assert torch.equal(load_data(root).train.images, first.train.images)
    write_png(root / "train" / "cat" / "new.png", (9, 9, 9))
    with pytest.raises(AssertionError, match="decoded again"):
        load_data(root)


def test_builtin_sample_is_small_real_cifar():
    assert SAMPLE.stat().st_size <= 3_000_000
    data = load_data("sample")
    assert (len(data.train), len(data.test), data.image_size) == (7500, 1000, (32, 32))
    assert data.classes[0] == "airplane" and torch.bincount(data.test.labels).tolist() == [100] * 10


def test_random_crop_is_a_window_of_the_reflect_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(random_crop(x, 0, g), x)
    out = random_crop(x, 2, torch.Generator().manual_seed(3))
    padded = F.pad(x.float(), (2, 2, 2, 2), mode="reflect")
    for i in range(16):  # every crop is one of the 25 windows
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(w, out[i].float()) for w in windows)
    flipped = random_crop(x, 0, torch.Generator().manual_seed(0), flip=True)
    mirrored = [torch.equal(f, o.flip(2)) and not torch.equal(f, o) for f, o in zip(flipped, x, strict=True)]
    assert 2 <= sum(mirrored) <= 14 and all(m or torch.equal(f, o) for m, f, o in zip(mirrored, flipped, x,
                                                                                       strict=True))


def test_cutout_and_random_resized_crop():
    g = torch.Generator().manual_seed(0)
    x = torch.ones(8, 3, 32, 32)
    out = cutout(x, 8, g)
    zeroed = (out == 0).all(1).sum((1, 2))
    assert zeroed.max() == 64 and zeroed.min() >= 16  # clipped at the borders, never larger
    rrc = random_resized_crop(torch.rand(4, 3, 32, 32), (0.3, 1.0), g)
    assert rrc.shape == (4, 3, 32, 32)
    same = Augment(cutout=4)(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), [0.5] * 3, [0.5] * 3,
                             torch.Generator().manual_seed(1))
    assert same.is_contiguous(memory_format=torch.channels_last) and same.dtype == torch.float32


def test_batches_are_reproducible_and_shards_add_up_to_the_global_batch():
    split = Split(torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8), torch.arange(40) % 4)
    one = ImageBatches(split, 8, [0.5] * 3, [0.25] * 3, seed=3)
    assert one.steps_per_epoch == 5
    a, b = list(one.epoch(2)), list(one.epoch(2))
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, b, strict=True))
    assert not torch.equal(a[0][1], next(iter(one.epoch(3)))[1])  # a new order each epoch
    shards = [ImageBatches(split, 8, [0.5] * 3, [0.25] * 3, seed=3, rank=r, world_size=2) for r in range(2)]
    for (x, y), (x0, y0), (x1, y1) in zip(a, shards[0].epoch(2), shards[1].epoch(2), strict=True):
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x)
    with pytest.raises(LightnetsError, match="fewer than one batch"):
        ImageBatches(split, 64, [0.5] * 3, [0.25] * 3)


def test_shards_split_each_global_batch_between_processes_and_repeat():
    from lightnets.data.loader import Shards

    whole = list(Shards(10, 4, seed=3, repeat=2).indices(5))
    assert len(whole) == 5 and sorted(torch.cat(whole).tolist()) == sorted(list(range(10)) * 2)
    ranks = [list(Shards(10, 4, seed=3, rank=r, world_size=2, repeat=2).indices(5)) for r in (0, 1)]
    assert all(torch.equal(torch.cat([a, b]), w) for a, b, w in zip(*ranks, whole, strict=True))
    assert not torch.equal(torch.cat(whole), torch.cat(list(Shards(10, 4, seed=3, repeat=2).indices(6))))
    with pytest.raises(LightnetsError, match="fewer than one batch of 16"):
        Shards(10, 16)
    with pytest.raises(LightnetsError, match="positive multiple of the number of processes"):
        Shards(10, 3, world_size=2)
