"""CIFAR-10 from its official python release (``cifar-10-python.tar.gz``), md5-checked.

The release stores its batches as Python pickles. They are read with an unpickler that can build
only plain containers and numpy arrays, so a tampered archive cannot run code even before the md5
check would have caught it.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_output
from ..errors import LightnetsError
from .dataset import Dataset, Split, cache_dir

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes, numbers and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_cifar_archive(path: Path) -> bool:
    """True when ``path`` is a tar archive laid out like the official release."""
    if not path.is_file():
        return False
    try:
        with tarfile.open(path, "r:*") as tar:
            first = tar.next()
            return first is not None and first.name.split("/")[0] == CIFAR10_DIR
    except (tarfile.TarError, EOFError, OSError):
        return False


def read_cifar10(path: Path, md5: str | None = CIFAR10_MD5) -> Dataset:
    """The 50,000 training and 10,000 test images of the official archive at ``path``.

    ``md5`` is the archive's expected checksum (the official one by default; None skips the check).
    """
    if md5 is not None and (actual := md5sum(path)) != md5:
        raise LightnetsError(f"{path} has md5 {actual}, not the official CIFAR-10 release's {md5}: "
                             f"the file is damaged or is not {CIFAR10_URL.rsplit('/', 1)[1]}")
    batches: dict[str, dict] = {}
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            name = member.name.removeprefix(f"{CIFAR10_DIR}/")
            if member.isfile() and name in {*TRAIN_BATCHES, "test_batch", "batches.meta"}:
                try:
                    batches[name] = _ArrayUnpickler(io.BytesIO(tar.extractfile(member).read()), encoding="bytes").load()
                except (pickle.UnpicklingError, EOFError, ValueError) as err:
                    raise LightnetsError(f"{member.name} in {path} is not a CIFAR-10 batch ({err})") from None
    missing = sorted({*TRAIN_BATCHES, "test_batch", "batches.meta"} - set(batches))
    if missing:
        raise LightnetsError(f"{path} is not a complete CIFAR-10 python archive: it lacks {', '.join(missing)}")
    classes = [n.decode() for n in batches["batches.meta"][b"label_names"]]

    def split(names: list[str]) -> Split:
        data = np.concatenate([np.asarray(batches[n][b"data"], dtype=np.uint8) for n in names])
        labels = np.concatenate([np.asarray(batches[n][b"labels"], dtype=np.int64) for n in names])
        return Split(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels))

    return Dataset(split(TRAIN_BATCHES), split(["test_batch"]), classes, str(path))


def download_cifar10() -> Path:
    """The official archive in the cache, downloaded (and md5-checked) on first use."""
    path = cache_dir() / "downloads" / CIFAR10_URL.rsplit("/", 1)[1]
    if path.is_file():
        return path
    with atomic_output(path) as tmp:
        try:
            with urllib.request.urlopen(CIFAR10_URL, timeout=60) as response, open(tmp, "wb") as f:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
        except OSError as err:
            raise LightnetsError(f"could not download CIFAR-10 from {CIFAR10_URL} ({err}); download it by hand "
                                 "and pass its path with --data, or give an image folder") from None
        if md5sum(tmp) != CIFAR10_MD5:
            raise LightnetsError(f"the download from {CIFAR10_URL} failed its md5 check; try again")
    return path
