"""One entry point for every data source: the built-in sample, CIFAR-10, image folders, archives."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import LightnetsError
from .cifar import download_cifar10, is_cifar_archive, read_cifar10
from .dataset import Dataset, Split, load_cached, save_cached, source_key, split_off
from .folder import TEST_NAMES, read_image_folder

SAMPLE = Path(__file__).resolve().parent.parent / "assets" / "cifar10-sample.tar.gz"
NAMED_SOURCES = {"sample": "the built-in CIFAR-10 sample (7,500 train, 1,000 test images, JPEG copy)",
                 "cifar10": "the official CIFAR-10 release, downloaded once into the cache"}


def resolve_source(source: str | Path) -> Path:
    """The file or directory behind a source name or path."""
    if str(source) == "sample":
        return SAMPLE
    if str(source) == "cifar10":
        return download_cifar10()
    path = Path(source).expanduser()
    if not path.exists():
        named = ", ".join(f"{k!r} ({v})" for k, v in NAMED_SOURCES.items())
        raise LightnetsError(f"data source {str(source)!r} does not exist; give a directory, a .tar or .tar.gz "
                             f"of image folders, a CIFAR-10 python archive, or one of {named}")
    if not (path.is_dir() or path.is_file()):  # a FIFO or a device would block or never end
        raise LightnetsError(f"data source {path} is not a regular file or a directory")
    return path


def load_data(source: str | Path, image_size: int | None = None, *, val_split: float | None = None,
              strict: bool = False, seed: int = 0, cache: bool = True, evaluation: bool = False) -> Dataset:
    """Load a data set as uint8 tensors, decoding it once and caching the result.

    ``image_size`` brings every image to that square size (default: the source's own size).
    ``val_split`` holds out that fraction of each class (seeded by ``seed``) as the evaluation
    split; it is required when the source has no test split of its own, and replaces it otherwise.
    Undecodable images are skipped and listed in ``Dataset.skipped``; ``strict`` raises instead.
    Training needs at least two classes (one class would score 100% and learn nothing). With ``evaluation``
    the data set is only evaluated: one class is allowed, a plain ``<class>/<image>`` folder is the evaluation
    split as a whole, and ``skipped`` keeps only the files of the evaluation split.
    """
    path = resolve_source(source)
    if is_cifar_archive(path):
        data = read_cifar10(path)
    else:
        key = source_key(path, image_size=image_size)
        data = load_cached(key) if cache else None
        if data is None:
            data = read_image_folder(path, image_size, strict=False)
            if cache:
                save_cached(data, key)
        if strict and data.skipped:
            raise LightnetsError(f"cannot decode image {data.skipped[0]} in {path} "
                                 f"({len(data.skipped)} undecodable in all); drop --strict to skip them")
    if image_size is not None and data.image_size != (image_size, image_size):
        data.train, data.test = resize_split(data.train, image_size), resize_split(data.test, image_size)
    if not evaluation and len(data.classes) < 2:
        raise LightnetsError(f"{path} has one class, {data.classes[0]!r}: training needs at least 2 class "
                             "folders (<class>/<image> or train/<class>/<image>)")
    if val_split is not None:
        data.train, data.test = split_off(data.train, val_split, seed)
    elif evaluation and not data.split_folders:
        data.test = data.train
    elif len(data.test) == 0:
        raise LightnetsError(f"{path} has no test (or val) folder; give --val-split to hold out part of train/")
    elif evaluation:  # only the test folder's undecodable files concern its evaluation
        data.skipped = [name for name in data.skipped if _split_folder(name) in TEST_NAMES]
    return data


def _split_folder(name: str) -> str:
    """The split folder of ``.../<split>/<class>/<image>`` (lower case), or '' for a shorter path."""
    parts = name.split("/")
    return parts[-3].lower() if len(parts) >= 3 else ""


def resize_split(split: Split, size: int) -> Split:
    """Bilinear (antialiased) resize of a whole split, in chunks to bound memory."""
    out = [F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
           .round_().clamp_(0, 255).to(torch.uint8) for x in split.images.split(1024)]
    return Split(torch.cat(out) if out else split.images.new_zeros(0, 3, size, size), split.labels)
