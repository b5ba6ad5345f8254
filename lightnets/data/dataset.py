"""Decoded data sets as uint8 tensors, and the cache that makes the second run start in seconds.

Images are held as one ``(N, C, H, W)`` uint8 tensor per split: CIFAR-10's 60,000 images take 184 MB,
fit on any device, and are augmented there in batches (see ``augment.py``), so no loader process sets
the pace. The cache is a safetensors file (no pickle) keyed by the source's identity (an archive's size and
mtime; a folder's whole file list with every path, size and mtime) and by the decode settings; its header
carries the class names and the list of skipped files.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .._io import replace_atomically
from ..errors import LightnetsError

CACHE_VERSION = 2


@dataclass
class Split:
    """One split of a data set: images ``(N, C, H, W)`` uint8 and labels ``(N,)`` int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    """A training split, an evaluation split (possibly empty) and the class names they index.

    ``skipped`` lists the files that could not be decoded (skipped rather than fatal unless strict).
    ``split_folders`` is False for a plain ``<class>/<image>`` folder, which has no train/ or test/ split.
    """

    train: Split
    test: Split
    classes: list[str]
    source: str
    skipped: list[str] = field(default_factory=list)
    split_folders: bool = True

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train.images.shape[2:])  # type: ignore[return-value]

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training images on the 0..1 scale, for normalisation.

        The std is floored at one grey level, so a constant channel cannot divide by zero.
        """
        x = self.train.images.float().div_(255)
        return x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).clamp(min=1 / 255).tolist()


def cache_dir() -> Path:
    """Where decoded data sets and downloads live: ``$LIGHTNETS_CACHE`` or ``~/.cache/lightnets``."""
    return Path(os.environ.get("LIGHTNETS_CACHE") or Path.home() / ".cache" / "lightnets")


def source_key(path: Path, **settings: object) -> str:
    """A cache key from the source's identity and the decode settings.

    A directory's identity is a hash of its sorted list of folders and files, each file with its relative
    path, type, size and mtime: renaming a class folder or moving an image to another class changes the labels,
    so it must change the key, as adding, removing or editing an image does. Only metadata is read (60,000
    files take well under a second).
    """
    path = path.resolve()
    if path.is_dir():
        listing = hashlib.sha256()
        for root, dirs, files in os.walk(path):
            dirs.sort()
            rel = os.path.relpath(root, path)
            listing.update(f"{rel}\0dir\n".encode("utf-8", "surrogateescape"))
            for name in sorted(files):
                try:
                    st = os.stat(os.path.join(root, name))
                    facts = f"{stat.S_IFMT(st.st_mode)}\0{st.st_size}\0{st.st_mtime_ns}"
                except OSError:  # a dangling link: it counts, as a file that cannot be read
                    facts = "unreadable"
                listing.update(f"{rel}/{name}\0{facts}\n".encode("utf-8", "surrogateescape"))
        ident = (str(path), listing.hexdigest())
    else:
        st = path.stat()
        ident = (str(path), st.st_size, st.st_mtime_ns)
    blob = json.dumps([CACHE_VERSION, ident, sorted(settings.items())], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def save_cached(data: Dataset, key: str) -> Path:
    """Write ``data`` to the cache atomically (temporary file, then rename)."""
    path = cache_dir() / "datasets" / f"{key}.safetensors"
    tensors = {"train.images": data.train.images.contiguous(), "train.labels": data.train.labels,
               "test.images": data.test.images.contiguous(), "test.labels": data.test.labels}
    meta = {"classes": json.dumps(data.classes), "source": data.source, "skipped": json.dumps(data.skipped),
            "split_folders": json.dumps(data.split_folders)}
    replace_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return path


def load_tensors(path: Path, fits: Callable[[dict[str, torch.Tensor]], bool]) -> dict[str, torch.Tensor] | None:
    """The tensors of a cache file when it is there, readable and ``fits`` them; None otherwise, so that a truncated,
    foreign or outdated file is rebuilt rather than trusted."""
    if not path.is_file():
        return None
    try:
        tensors = load_file(str(path))
        return tensors if fits(tensors) else None
    except Exception:  # a truncated or foreign file is simply rebuilt
        return None


def load_cached(key: str) -> Dataset | None:
    """The cached data set for ``key``, or None when there is none (or it is unreadable)."""
    path = cache_dir() / "datasets" / f"{key}.safetensors"
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        t = load_file(str(path))
        return Dataset(Split(t["train.images"], t["train.labels"]), Split(t["test.images"], t["test.labels"]),
                       json.loads(meta["classes"]), meta["source"], json.loads(meta["skipped"]),
                       json.loads(meta["split_folders"]))
    except Exception:  # a truncated or foreign file is simply rebuilt
        return None


def empty_split(channels: int, size: tuple[int, int]) -> Split:
    return Split(torch.zeros(0, channels, *size, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))


def class_balanced(labels: torch.Tensor, counts: list[int], generator: torch.Generator) -> list[torch.Tensor]:
    """Disjoint seeded index sets with about ``counts[i] / classes`` images of every class each."""
    classes = labels.unique().tolist()
    picks: list[list[torch.Tensor]] = [[] for _ in counts]
    for j, c in enumerate(classes):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        start = 0
        for i, n in enumerate(counts):
            take = n // len(classes) + (j < n % len(classes))
            picks[i].append(idx[start:start + take])
            start += take
    return [torch.cat(p) for p in picks]


def subset(train: Split, images: int, seed: int) -> Split:
    """``images`` of ``train``, as many of each class as can be (seeded): training on part of a data set,
    as Hinton et al. did to show soft targets standing in for data."""
    if not 0 < images <= len(train):
        raise LightnetsError(f"--train-subset must be between 1 and the {len(train)} training images, got {images}")
    (idx,) = class_balanced(train.labels, [images], torch.Generator().manual_seed(seed))
    return Split(train.images[idx], train.labels[idx])


def split_off(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Hold out ``fraction`` of each class (seeded) as a validation split."""
    if not 0 < fraction < 1:
        raise LightnetsError(f"--val-split must be between 0 and 1 (exclusive), got {fraction}")
    g = torch.Generator().manual_seed(seed)
    held = []
    for c in train.labels.unique().tolist():
        idx = (train.labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        held.append(idx[: round(len(idx) * fraction)])
    mask = torch.zeros(len(train), dtype=torch.bool)
    mask[torch.cat(held)] = True
    return (Split(train.images[~mask], train.labels[~mask]), Split(train.images[mask], train.labels[mask]))
