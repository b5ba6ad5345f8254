"""Image folders in a directory, a ``.tar`` or a ``.tar.gz``: ``train/<class>/*``, ``test/<class>/*`` or ``<class>/*``.

Images are decoded with Pillow, converted to RGB and brought to one square size at decode time
(shorter side resized, centre crop), so a folder of photos of any size becomes one uint8 tensor.
An archive is read in a single streaming pass (a ``.tar.gz`` is never unpacked to disk). A single
top-level folder that wraps everything (``cifar10/train/...``) is looked through. Only image files are
opened, only regular ones (never a FIFO or a device) and none over ``MAX_IMAGE_BYTES``; the others are
skipped and listed like undecodable images.
"""

from __future__ import annotations

import io
import math
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import LightnetsError
from .dataset import Dataset, Split, empty_split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
TRAIN_NAMES = ("train", "training")
TEST_NAMES = ("test", "val", "valid", "validation")
MAX_IMAGE_BYTES = 64 << 20  # a larger "image" is not read: no photo in a training set is this big
WIDE_GREY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")  # 16-bit (and 32-bit integer) grey


def _to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as RGB; 16-bit grey is scaled to 8 bits, which Pillow's own conversion clips to white."""
    if img.mode in WIDE_GREY_MODES:
        wide = np.asarray(img).astype(np.float64)
        img = Image.fromarray(np.rint(np.clip(wide, 0, 65535) / 257).astype(np.uint8))
    return img.convert("RGB")


INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
                  "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


def decode_image(data: bytes | Path, size: int | None, crop_pct: float = 1.0,
                 interpolation: str = "bilinear") -> np.ndarray:
    """One image as an ``(H, W, 3)`` uint8 array; with ``size``, shorter side resized to ``floor(size / crop_pct)``
    with ``interpolation`` and the centre ``size`` x ``size`` cropped (timm's and torchvision's evaluation
    transform; ``crop_pct`` 1 keeps the whole shorter side)."""
    if not 0 < crop_pct <= 1:
        raise LightnetsError(f"crop_pct must be in (0, 1], got {crop_pct}")
    if interpolation not in INTERPOLATIONS:
        raise LightnetsError(f"unknown interpolation {interpolation!r}; choose from {', '.join(INTERPOLATIONS)}")
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
        img = _to_rgb(img)
        if size is not None and (img.size != (size, size) or crop_pct < 1):
            w, h = img.size
            short = max(size, math.floor(size / crop_pct))
            scale = short / min(w, h)
            nw, nh = max(short, round(w * scale)), max(short, round(h * scale))
            img = img.resize((nw, nh), INTERPOLATIONS[interpolation], reducing_gap=3.0)
            left, top = (nw - size) // 2, (nh - size) // 2
            img = img.crop((left, top, left + size, top + size))
        return np.array(img, dtype=np.uint8)  # a writable copy, so torch.from_numpy is safe


def read_image_file(path: str | Path) -> np.ndarray:
    """One image file as ``(H, W, 3)`` uint8 RGB at its own size; a file Pillow cannot decode is one error naming it."""
    try:
        return decode_image(Path(path), None)
    except (OSError, ValueError) as err:  # Pillow's UnidentifiedImageError is an OSError
        raise LightnetsError(f"cannot decode image {path}: {err}") from None


def unreadable_reason(mode: int, size: int) -> str | None:
    """Why a file of this ``stat`` mode and size is not read as an image, or None when it is read.

    Only regular files are read (a FIFO named ``*.jpg`` would block forever), and none over ``MAX_IMAGE_BYTES``.
    """
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if size > MAX_IMAGE_BYTES:
        return f"{size / 2**20:.0f} MB, over the {MAX_IMAGE_BYTES >> 20} MB limit for one image"
    return None


def image_files(inputs: list[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in the given folders."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        elif item.is_file():
            files.append(item)
        elif item.exists():
            raise LightnetsError(f"{item} is not a regular file; give image files or folders of images")
        else:
            raise LightnetsError(f"{item} does not exist; give image files or folders of images")
    if not files:
        raise LightnetsError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, inputs))}")
    return files


def _entries(source: Path) -> Iterator[tuple[tuple[str, ...], bytes | Path | str | None]]:
    """Every folder (contents None) and image file under ``source`` with its contents (a path or bytes), or
    with the reason (a str) it is not read. Other files are never opened: an archive member that is not an
    image is passed over, not read into memory."""
    if source.is_dir():
        for root, dirs, files in os.walk(source):
            dirs.sort()
            rel = Path(root).relative_to(source).parts
            if rel:
                yield rel, None
            for name in sorted(files):
                parts, path = (*rel, name), Path(root) / name
                if not _is_image(parts):
                    continue
                try:
                    st = path.stat()
                except OSError as err:  # a dangling link, a file removed meanwhile
                    yield parts, f"cannot be read ({err.strerror})"
                    continue
                yield parts, unreadable_reason(st.st_mode, st.st_size) or path
        return
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                parts = tuple(p for p in member.name.split("/") if p not in ("", "."))
                if member.isdir():
                    yield parts, None
                elif _is_image(parts):
                    mode = stat.S_IFREG if member.isfile() else stat.S_IFLNK  # links and devices are not read
                    reason = unreadable_reason(mode, member.size)
                    f = None if reason else tar.extractfile(member)
                    yield parts, reason or (f.read() if f else b"")
            check_tar_end(tar)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise LightnetsError(f"{source} is not a readable .tar or .tar.gz archive ({err}); "
                             "give a directory, a .tar or a .tar.gz of train/<class>/<image> folders") from None


def check_tar_end(tar: tarfile.TarFile) -> None:
    """Raise ``tarfile.ReadError`` unless only zeros follow the members listed.

    tarfile ends its listing silently at a damaged header, which would drop every later member without a
    word; reading the (zero) padding to the end also makes gzip check its CRC.
    """
    assert tar.fileobj is not None
    while chunk := tar.fileobj.read(1 << 20):
        if chunk.strip(b"\0"):
            raise tarfile.ReadError(f"damaged data after byte {tar.offset}: a header that is not a tar header")


def _is_image(parts: tuple[str, ...]) -> bool:
    return bool(parts) and not any(p.startswith(".") for p in parts) and parts[-1].lower().endswith(IMAGE_EXTENSIONS)


def read_image_folder(source: Path, image_size: int | None = None, strict: bool = False) -> Dataset:
    """Decode an image-folder data set; the test split is empty when there is no ``test/`` (or ``val/``) folder.

    Undecodable images are skipped and listed in ``Dataset.skipped`` (``strict`` raises instead,
    naming the file).
    """
    decoded: list[tuple[tuple[str, ...], np.ndarray]] = []
    folders: set[tuple[str, ...]] = set()
    skipped: list[str] = []
    size = image_size
    for parts, contents in _entries(source):
        if contents is None:
            folders.add(parts)
            continue
        problem = contents if isinstance(contents, str) else None
        if problem is None:
            try:
                array = decode_image(contents, size)
            except Exception as err:  # Pillow raises many types for a damaged file
                problem = str(err)
        if problem is not None:
            name = "/".join(parts)
            if strict:
                raise LightnetsError(f"cannot decode image {name} in {source}: {problem}")
            skipped.append(name)
            continue
        if size is None:
            size = max(array.shape[:2])
            if array.shape[0] != array.shape[1]:
                array = decode_image(contents, size)
        decoded.append((parts, array))
    if not decoded:
        raise LightnetsError(f"no images found in {source}; expected train/<class>/<image> (and "
                             f"test/<class>/<image>) or <class>/<image>, extensions {', '.join(IMAGE_EXTENSIONS)}")
    # Look through single wrapping folders ("cifar10/train/cat/1.png" -> "train/cat/1.png").
    depth = 0
    while (len({p[depth] for p, _ in decoded}) == 1 and min(len(p) for p, _ in decoded) > depth + 2
           and decoded[0][0][depth].lower() not in TRAIN_NAMES):
        depth += 1
    folders = {f[depth:] for f in folders if len(f) > depth}
    images = [(p[depth:], a) for p, a in decoded]
    return _assemble(source, images, folders, skipped)


def _assemble(source: Path, images: list[tuple[tuple[str, ...], np.ndarray]],
              folders: set[tuple[str, ...]], skipped: list[str]) -> Dataset:
    """Group decoded images into splits and classes, checking the layout."""
    split_layout = any(len(p) == 3 and p[0].lower() in TRAIN_NAMES for p, _ in images)
    groups: dict[str, dict[str, list[np.ndarray]]] = {"train": {}, "test": {}}
    for parts, array in images:
        if split_layout:
            if len(parts) != 3:
                continue
            split = "train" if parts[0].lower() in TRAIN_NAMES else "test" if parts[0].lower() in TEST_NAMES else None
            if split is None:
                continue
            groups[split].setdefault(parts[1], []).append(array)
        elif len(parts) == 2:
            groups["train"].setdefault(parts[0], []).append(array)
        else:
            raise LightnetsError(f"{'/'.join(parts)} in {source} is not in a class folder; expected "
                                 "train/<class>/<image> (and test/<class>/<image>) or <class>/<image>")
    for folder in sorted(folders):
        in_split = split_layout and len(folder) == 2 and folder[0].lower() in TRAIN_NAMES + TEST_NAMES
        cls = folder[1] if in_split else folder[0] if not split_layout and len(folder) == 1 else None
        split = ("train" if folder[0].lower() in TRAIN_NAMES else "test") if in_split else "train"
        if cls is not None and not cls.startswith(".") and cls not in groups[split]:
            raise LightnetsError(f"class folder {'/'.join(folder)} in {source} has no images; "
                                 "remove it or add images")
    classes = sorted(groups["train"])
    if not classes:
        raise LightnetsError(f"no training images in {source}: the train/ folder has no class folders with images")
    unknown = sorted(set(groups["test"]) - set(classes))
    if unknown:
        raise LightnetsError(f"the test split of {source} has classes the training split lacks: {', '.join(unknown)}; "
                             f"training classes: {', '.join(classes)}")
    size = images[0][1].shape[:2]
    return Dataset(_stack(groups["train"], classes, size), _stack(groups["test"], classes, size),
                   classes, str(source), skipped, split_folders=split_layout)


def _stack(by_class: dict[str, list[np.ndarray]], classes: list[str], size: tuple[int, int]) -> Split:
    arrays = [a for c in classes for a in by_class.get(c, [])]
    if not arrays:
        return empty_split(3, size)
    labels = [i for i, c in enumerate(classes) for _ in by_class.get(c, [])]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return Split(images, torch.tensor(labels, dtype=torch.int64))
