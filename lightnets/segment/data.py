"""Segmentation data: image/mask pairs from a directory, a .zip or a .tar/.tar.gz (found by ``layout``, their
classes read by ``labels``), checked when decoded, and a cache of uint8 tensors (images ``(N, 3, H, W)``, masks
``(N, H, W)``) from which batches are drawn on the device.

Inside, the ignore label is always 255 and the classes are ``0..C-1``. Masks are class-index PNGs (mode L, P or
16-bit grey; the index of each class given by a ``classes.txt`` of ``<index> <name>`` lines) or colour-coded RGB
PNGs decoded with a palette (``R G B name`` lines, line order = class order; an RGB mask whose three channels
agree is read as indices). A Void/unlabelled entry in either file is the ignore label, not a class. A mask that
is not PNG, a size that differs from its image's, a value or colour that is not a class: one error naming the
file, raised while decoding, before any training can start.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from tqdm import tqdm

from .._io import replace_atomically
from ..data import decode_image
from ..data.dataset import cache_dir, load_tensors, source_key
from ..data.folder import WIDE_GREY_MODES
from ..detect.files import FileSource
from ..errors import LightnetsError
from .labels import (
    CLASSES_FILE,
    MAX_CLASSES,
    PALETTE_FILES,
    display_colors,
    parse_classes,
    parse_palette,
    read_label_file,
)
from .layout import SPLITS, find_pairs
from .metrics import IGNORE

INDEX_MODES = ("1", "L", "P", *WIDE_GREY_MODES)
CACHE_FORMAT = 1


@dataclass
class SegmentationDataset:
    """Image/mask pairs (members of ``source``) and the classes their masks index.

    ``mask_values`` are the values of the classes in index masks and ``ignore_values`` those read as ignore (the
    classes file's Void index and 255); ``palette`` ``(C, 3)`` and ``ignore_colors`` ``(K, 3)`` decode colour
    masks. ``unmatched_masks`` counts the masks without an image, which are left out.
    """

    source: FileSource
    pairs: list[tuple[str, str]]
    classes: list[str]
    palette: np.ndarray | None = None
    split: str | None = None
    mask_values: tuple[int, ...] = ()
    ignore_values: tuple[int, ...] = (IGNORE,)
    ignore_colors: np.ndarray | None = None
    unmatched_masks: int = 0

    def __post_init__(self) -> None:
        if not self.mask_values:
            self.mask_values = tuple(range(len(self.classes)))

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: Iterable[int]) -> SegmentationDataset:
        return SegmentationDataset(self.source, [self.pairs[i] for i in indices], self.classes, self.palette,
                                   self.split, self.mask_values, self.ignore_values, self.ignore_colors,
                                   self.unmatched_masks)

    @property
    def colors(self) -> np.ndarray:
        """``(C, 3)`` uint8 colours to draw the classes with (overlays, legends)."""
        return display_colors(self.classes, self.palette)

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, mask = self.pairs[index]
        return self.decode_pair(self.source.read(image), self.source.read(mask), index)

    def decode_pair(self, image_data: bytes, mask_data: bytes, index: int) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 ``(H, W, 3)`` and its checked label mask uint8 ``(H, W)`` (classes ``0..C-1``, ignore 255)."""
        image_name, mask_name = self.pairs[index]
        try:
            image = decode_image(image_data, None)
        except Exception as err:  # Pillow raises many types for a damaged file
            raise LightnetsError(f"cannot decode image {image_name} in {self.source.path}: {err}") from None
        mask = self._decode_mask(mask_data, mask_name)
        if mask.shape != image.shape[:2]:
            raise LightnetsError(f"mask {mask_name} is {mask.shape[1]}x{mask.shape[0]} but its image {image_name} "
                                 f"is {image.shape[1]}x{image.shape[0]} (in {self.source.path})")
        return image, mask

    def _decode_mask(self, data: bytes, name: str) -> np.ndarray:
        where = f"{name} in {self.source.path}"
        try:
            with Image.open(io.BytesIO(data)) as img:
                kind, mode = img.format, img.mode
                raw = np.asarray(img.convert("RGB") if mode in ("RGB", "RGBA") else img)
        except Exception as err:  # Pillow raises many types for a damaged file
            raise LightnetsError(f"cannot decode mask {where}: {err}") from None
        if kind != "PNG":
            raise LightnetsError(f"mask {where} is {kind} data: masks must be lossless PNG (JPEG changes labels)")
        if mode in ("RGB", "RGBA"):
            if self.palette is not None:
                return self._colour_labels(raw, where)
            if not ((raw[..., 0] == raw[..., 1]) & (raw[..., 1] == raw[..., 2])).all():
                raise LightnetsError(f"mask {where} is a colour (RGB) image: give a palette file ('R G B name' "
                                     "lines) to decode its colours, or use class-index masks (mode L or P)")
            raw = raw[..., 0]
        elif mode not in INDEX_MODES:
            raise LightnetsError(f"mask {where} has image mode {mode}: masks must be class-index PNGs (mode L, P, "
                                 "16-bit grey) or RGB colour masks")
        return self._index_labels(raw.astype(np.int64), where)

    @cached_property
    def _lut(self) -> np.ndarray:
        """Mask value -> label, -1 for a value that is neither a class nor ignored."""
        lut = np.full(1 << 16, -1, dtype=np.int16)
        lut[list(self.ignore_values)] = IGNORE
        lut[list(self.mask_values)] = np.arange(len(self.mask_values))
        return lut

    def _index_labels(self, raw: np.ndarray, where: str) -> np.ndarray:
        inside = (raw >= 0) & (raw < len(self._lut))
        labels = self._lut[np.where(inside, raw, 0)]
        bad = (labels < 0) | ~inside
        if bad.any():
            value = int(raw[bad][0])
            raise LightnetsError(f"mask {where} has label value {value} on {int((raw == value).sum())} pixels, "
                                 f"not a class ({_values_text(self.mask_values)}) nor ignored "
                                 f"({_values_text(self.ignore_values)})")
        return labels.astype(np.uint8)

    def _colour_labels(self, rgb: np.ndarray, where: str) -> np.ndarray:
        assert self.palette is not None
        colours = np.concatenate([self.palette, _rows(self.ignore_colors)]).astype(np.int32)
        labels = np.concatenate([np.arange(len(self.palette)), np.full(len(colours) - len(self.palette), IGNORE)])
        keys = colours[:, 0] << 16 | colours[:, 1] << 8 | colours[:, 2]
        order = np.argsort(keys)
        keys, labels = keys[order], labels[order].astype(np.uint8)
        codes = rgb.astype(np.int32)
        codes = codes[..., 0] << 16 | codes[..., 1] << 8 | codes[..., 2]
        slot = np.searchsorted(keys, codes).clip(max=len(keys) - 1)
        known = keys[slot] == codes
        if not known.all():
            unknown, counts = np.unique(codes[~known], return_counts=True)
            code, count = int(unknown[counts.argmax()]), int(counts.max())
            others = f" ({len(unknown) - 1} other unknown colours too)" if len(unknown) > 1 else ""
            raise LightnetsError(f"mask {where} has colour ({code >> 16}, {code >> 8 & 255}, {code & 255}) on "
                                 f"{count} pixels, not in the palette{others}")
        return labels[slot]



def _values_text(values: Iterable[int]) -> str:
    values = sorted(values)
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ", ".join(map(str, values))


def _rows(colours: np.ndarray | None) -> np.ndarray:
    return np.zeros((0, 3), dtype=np.uint8) if colours is None else colours



# --- reading -----------------------------------------------------------------------------------------------------


def read_segmentation_data(path: str | Path | FileSource, split: str | None = None, *,
                           classes_file: str | Path | None = None, palette_file: str | Path | None = None,
                           classes: list[str] | None = None, num_classes: int | None = None) -> SegmentationDataset:
    """The image/mask pairs of ``split`` (None: the whole source) in a directory or archive, and their classes.

    The classes come from ``classes_file``, else ``classes``, else a ``classes.txt`` found in the split folder or
    the root, else the palette's names, else ``num_classes`` (``class0..``). ``palette_file`` (else a
    ``label_colors.txt`` or ``palette.txt`` found there) decodes colour masks. A file given is a path on disk, else
    a member of the source.
    Pass a ``FileSource`` to read several splits of one archive without listing it again.
    """
    if split is not None and split not in SPLITS:
        raise LightnetsError(f"unknown split {split!r}; choose from {', '.join(SPLITS)} (or None for all)")
    source = path if isinstance(path, FileSource) else FileSource(path)
    pairs, unmatched, folders = find_pairs(source, split)

    palette = ignore_colors = None
    names_from_palette: list[str] | None = None
    palette_text = read_label_file(source, palette_file, folders, PALETTE_FILES, "palette")
    if palette_text is not None:
        palette_name, text = palette_text
        palette, ignore_colors, names_from_palette = parse_palette(text, palette_name)
    mask_values, ignore_values = (), (IGNORE,)
    classes_text = read_label_file(source, classes_file, folders, () if classes else (CLASSES_FILE,), "classes")
    if classes_text is not None:
        origin, text = classes_text
        classes, mask_values, ignore_values = parse_classes(text, origin)
    elif classes:
        classes, origin = list(classes), "classes"
    elif names_from_palette is not None:
        classes, origin = names_from_palette, "the palette"
    elif num_classes is not None:
        classes, origin = [f"class{i}" for i in range(num_classes)], "num_classes"
    else:
        raise LightnetsError(f"{source.path} has no {CLASSES_FILE}: give --classes FILE or --num-classes")
    if num_classes is not None and num_classes != len(classes):
        raise LightnetsError(f"num_classes is {num_classes} but {origin} gives {len(classes)} classes")
    if not 1 <= len(classes) <= MAX_CLASSES:
        raise LightnetsError(f"{origin} gives {len(classes)} classes; between 1 and {MAX_CLASSES} are allowed "
                             f"(label {IGNORE} is the ignore label)")
    if palette is not None and len(palette) != len(classes):
        raise LightnetsError(f"the palette {palette_name} has {len(palette)} class colours but {origin} gives "
                             f"{len(classes)} classes")
    return SegmentationDataset(source, pairs, classes, palette, split, mask_values, ignore_values, ignore_colors,
                               unmatched)


# --- the cache ---------------------------------------------------------------------------------------------------


class SegmentationCache:
    """A dataset decoded once, at one size, into uint8 tensors on any device: ``images`` ``(N, 3, H, W)``,
    ``masks`` ``(N, H, W)`` (ignore 255) and ``original_sizes`` ``(N, 2)`` as ``(H, W)``.

    ``size=None`` keeps the data's own size when all images share it; ``size=(H, W)`` resizes (bilinear and
    antialiased for images, nearest for masks, so labels stay labels). With ``cache`` the tensors are kept in
    ``cache_dir()/segmentation`` and a second construction reads them instead of decoding again.
    """

    def __init__(self, dataset: SegmentationDataset, size: tuple[int, int] | None = None, cache: bool = True,
                 progress: bool = False) -> None:
        if size is not None and (len(size) != 2 or not all(isinstance(v, int) and v >= 1 for v in size)):
            raise LightnetsError(f"size must be (height, width) in whole pixels, got {size!r}")
        if not len(dataset):
            raise LightnetsError(f"no image/mask pairs to decode from {dataset.source.path}")
        self.dataset = dataset
        key = source_key(dataset.source.path, format=CACHE_FORMAT, split=dataset.split, size=size,
                         classes=dataset.classes, pairs=dataset.pairs, mask_values=dataset.mask_values,
                         ignore_values=dataset.ignore_values, palette=_rows(dataset.palette).tolist(),
                         ignore_colors=_rows(dataset.ignore_colors).tolist())
        self.cache_file = cache_dir() / "segmentation" / f"{key}.safetensors"
        loaded = load_tensors(self.cache_file, self._fits) if cache else None
        if loaded is None:
            loaded = self._decode(size, progress)
            if cache:
                replace_atomically(self.cache_file, lambda tmp: save_file(
                    loaded, str(tmp), metadata={"classes": json.dumps(dataset.classes)}))
        self.images, self.masks, self.original_sizes = loaded["images"], loaded["masks"], loaded["original_sizes"]

    def _fits(self, tensors: dict[str, torch.Tensor]) -> bool:
        """Whether cached tensors are this data set's: one image, mask and size per pair, masks as large as images."""
        n, _, height, width = tensors["images"].shape
        return n == len(self.dataset) and tensors["masks"].shape == (n, height, width) and \
            tensors["original_sizes"].shape == (n, 2)

    def _decode(self, size: tuple[int, int] | None, progress: bool) -> dict[str, torch.Tensor]:
        """Every pair decoded and checked, in one pass over the source (a tar is read front to back once)."""
        dataset = self.dataset
        slots: dict[str, list[tuple[int, int]]] = {}  # a subset may hold a pair twice
        for i, pair in enumerate(dataset.pairs):
            for side, name in enumerate(pair):
                slots.setdefault(name, []).append((i, side))
        pending: dict[int, list[bytes | None]] = {}
        out: dict[str, torch.Tensor] = {"original_sizes": torch.zeros(len(dataset), 2, dtype=torch.int64)}
        first, decoded = "", 0  # first: the image whose size the others must have when no size is given
        with tqdm(total=len(dataset), disable=not progress, desc="decoding", unit="img") as bar:
            for name, data in dataset.source.read_many(list(slots)):
                for i, side in slots[name]:
                    got = pending.setdefault(i, [None, None])
                    got[side] = data
                    if got[0] is None or got[1] is None:
                        continue
                    del pending[i]
                    image, mask = dataset.decode_pair(got[0], got[1], i)
                    height, width = mask.shape
                    out["original_sizes"][i] = torch.tensor([height, width])
                    if not first:
                        first, (h, w) = dataset.pairs[i][0], size or (height, width)
                        out["images"] = torch.empty(len(dataset), 3, h, w, dtype=torch.uint8)
                        out["masks"] = torch.empty(len(dataset), h, w, dtype=torch.uint8)
                    if (height, width) != (h, w):
                        if size is None:
                            raise LightnetsError(f"images differ in size: {first} is {w}x{h} but "
                                                 f"{dataset.pairs[i][0]} is {width}x{height}; give a size (H, W) "
                                                 "to resize them all to")
                        image, mask = resize_pair(image, mask, size)
                    out["images"][i] = torch.from_numpy(image).permute(2, 0, 1)
                    out["masks"][i] = torch.from_numpy(mask)
                    decoded += 1
                    bar.update()
            if decoded != len(dataset):  # never leave a slot of torch.empty to be trained on
                raise LightnetsError(f"read only {decoded} of the {len(dataset)} image/mask pairs from "
                                     f"{dataset.source.path}")
        return out

    def __len__(self) -> int:
        return len(self.images)

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    @property
    def num_classes(self) -> int:
        return len(self.dataset.classes)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.masks.shape[1:])  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> SegmentationCache:
        for name in ("images", "masks", "original_sizes"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def batch(self, indices: torch.Tensor | Iterable[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images ``(B, 3, H, W)`` and masks ``(B, H, W)`` of ``indices``."""
        index = torch.as_tensor(list(indices) if not isinstance(indices, torch.Tensor) else indices,
                                dtype=torch.long, device=self.images.device)
        return self.images[index], self.masks[index]

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches in order (or shuffled with ``generator``); the last one may be smaller."""
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            yield self.batch(order[start:start + batch_size])

    def class_frequencies(self, chunk: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """Per class: its pixels, and the pixels of the images it appears in (all of their pixels), both int64
        ``(C,)``: the two sums of median-frequency balancing."""
        classes = self.num_classes
        counts = torch.zeros(classes, dtype=torch.int64, device=self.masks.device)
        totals = torch.zeros_like(counts)
        pixels = self.masks.shape[1] * self.masks.shape[2]
        for start in range(0, len(self), chunk):
            masks = self.masks[start:start + chunk].reshape(-1, pixels).long()
            offset = torch.arange(len(masks), device=masks.device).unsqueeze(1) * 256
            per_image = torch.bincount((masks + offset).flatten(), minlength=len(masks) * 256)
            per_image = per_image.view(len(masks), 256)[:, :classes]
            counts += per_image.sum(0)
            totals += (per_image > 0).sum(0) * pixels
        return counts, totals

    def class_pixel_counts(self) -> torch.Tensor:
        """The pixels of each class over the cache, int64 ``(C,)`` (ignored pixels are not counted)."""
        return self.class_frequencies()[0]


def resize_pair(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``image`` resized to ``size`` (H, W) bilinear (Pillow's, antialiased), ``mask`` nearest (labels stay labels)."""
    height, width = size
    image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)).copy()
    mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST)).copy()
    return image, mask


def median_frequency_weights(frequencies: SegmentationCache | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """SegNet's class weights (Eigen and Fergus' median-frequency balancing): ``freq_c`` = pixels of class c / all
    pixels of the images where c appears, ``weight_c = median(freq) / freq_c``, so rare classes count as much as
    common ones. Takes a cache or its ``class_frequencies()``; a class that appears nowhere gets weight 0."""
    counts, totals = frequencies.class_frequencies() if isinstance(frequencies, SegmentationCache) else frequencies
    present = totals > 0
    weights = torch.zeros(len(counts), dtype=torch.float64, device=counts.device)
    if present.any():
        freq = counts[present].double() / totals[present].double()
        weights[present] = freq.quantile(0.5) / freq
    return weights.float()

