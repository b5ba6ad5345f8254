"""Detection data: COCO json and Kuzushiji csv readers (a directory or a .zip/.tar/.tar.gz archive), checked
record by record, and a cache of letterboxed uint8 tensors from which batches are drawn on the device.

Boxes are held as ``x1, y1, x2, y2`` floats in image pixels. A bad record (a coordinate that is not a finite
number, a box outside its image or without area, an image listed twice or listed but missing, an unknown
category, an undecodable image) stops reading with one message naming it, never a silently wrong target; only
COCO crowd regions, which COCO itself excludes from training, and exact duplicates (an annotation or a csv row
given twice) are skipped and counted in ``DetectionDataset.skipped``. Files are read through ``files.FileSource``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..data import decode_image
from ..errors import LightnetsError
from .files import IMAGE_SUFFIXES, FileSource
from .transforms import letterbox_image, to_input_boxes

EDGE_TOLERANCE = 1.0  # pixels a box may overhang its image (rounding in annotation tools); it is clipped


@dataclass
class DetectionRecord:
    """One image: its id in the source annotations, its file in the source, its size and its objects."""

    image_id: int | str
    file: str
    width: int
    height: int
    boxes: np.ndarray  # (n, 4) float32, x1 y1 x2 y2 in image pixels
    labels: np.ndarray  # (n,) int64 class index


@dataclass
class DetectionDataset:
    """Records plus the class names they index and where their images are read from."""

    source: FileSource
    records: list[DetectionRecord]
    class_names: list[str]
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, index: int) -> np.ndarray:
        record = self.records[index]
        return decode_record_image(self.source.read(record.file), record)

    def subset(self, indices: Iterable[int]) -> DetectionDataset:
        return DetectionDataset(self.source, [self.records[i] for i in indices], self.class_names, self.skipped)


def decode_record_image(data: bytes, record: DetectionRecord) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)``; refuses an undecodable image, and one whose size differs from the one its
    annotations were checked against, since every box would then be misplaced."""
    try:
        rgb = decode_image(data, None)
    except Exception as err:  # Pillow raises many types for a damaged file
        raise LightnetsError(f"cannot decode image {record.file!r} (id {record.image_id!r}): {err}") from None
    if rgb.shape[:2] != (record.height, record.width):
        raise LightnetsError(f"image {record.file!r} (id {record.image_id!r}) is {rgb.shape[1]}x{rgb.shape[0]}, "
                             f"but its annotations say {record.width}x{record.height}")
    return rgb


def checked_box(x: float, y: float, w: float, h: float, width: int, height: int, where: str) -> list[float]:
    """``x, y, w, h`` as a clipped ``x1, y1, x2, y2``; a clear error for a coordinate that is not a finite number
    (NaN passes every comparison), a non-positive size, a box outside or one left without area by the clipping."""
    box = f"box [x={x}, y={y}, w={w}, h={h}]"
    if not all(map(math.isfinite, (x, y, w, h))):
        raise LightnetsError(f"{where}: {box} has a coordinate that is not a finite number")
    if not (w > 0 and h > 0):
        raise LightnetsError(f"{where}: {box} has a non-positive size; width and height must be > 0")
    t = EDGE_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        raise LightnetsError(f"{where}: {box} lies outside its {width}x{height} image")
    x1, y1 = min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height))
    x2, y2 = min(x + w, float(width)), min(y + h, float(height))
    if not (x2 > x1 and y2 > y1):
        raise LightnetsError(f"{where}: {box} has no area inside its {width}x{height} image")
    return [x1, y1, x2, y2]


def _records(boxes_by_image: dict, labels_by_image: dict, images: list[tuple], class_agnostic: bool
             ) -> list[DetectionRecord]:
    """One record per image; two images reading the same file are refused (the cache holds one per file)."""
    records = []
    owner: dict[str, int | str] = {}
    for image_id, file, width, height in images:
        if owner.setdefault(file, image_id) != image_id:
            raise LightnetsError(f"images {owner[file]!r} and {image_id!r} are both the file {file!r}; "
                                 "each image must be listed once")
        boxes = np.asarray(boxes_by_image.get(image_id, []), dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(labels_by_image.get(image_id, []), dtype=np.int64)
        if class_agnostic:
            labels = np.zeros_like(labels)
        records.append(DetectionRecord(image_id, file, width, height, boxes, labels))
    return records


def read_coco(path: str | Path, annotation_file: str | None = None, class_agnostic: bool = False
              ) -> DetectionDataset:
    """A COCO-format detection set: ``images`` (id, file_name, width, height), ``annotations`` (image_id,
    category_id, bbox ``[x, y, w, h]``) and ``categories`` (id, name).

    ``path`` is a directory or archive holding one ``.json`` (or name it with ``annotation_file``) and the
    images, found relative to the json's folder, the root, or by file name anywhere inside.
    ``class_agnostic`` maps every category to one class, ``object``.
    """
    source = FileSource(path)
    json_name = annotation_file or source.only(source.with_suffix(".json"), "COCO .json annotation file",
                                           "annotation_file")
    if json_name not in source.names:
        raise LightnetsError(f"{source.path} has no file {json_name!r}")
    try:
        coco = json.loads(source.read(json_name))
        categories = sorted(coco["categories"], key=lambda c: c["id"])
        class_index = {c["id"]: i for i, c in enumerate(categories)}
        category_names = [str(c["name"]) for c in categories]
        images_json, annotations = list(coco["images"]), list(coco["annotations"])
    except (ValueError, KeyError, TypeError) as err:  # ValueError: bad json, or bytes that are not UTF-8
        raise LightnetsError(f"{json_name} is not a COCO detection file (images, annotations, categories with "
                             f"id and name): {type(err).__name__}: {err}") from None
    folder = PurePosixPath(json_name).parent.as_posix()
    images, sizes, files = [], {}, {}
    for image in images_json:
        image_id, file_name, width, height = _coco_image(image, json_name)
        if image_id in sizes:
            raise LightnetsError(f"{json_name}: image id {image_id!r} is listed twice ({files[image_id]!r} and "
                                 f"{file_name!r}); image ids must be unique")
        file = source.find(file_name, folder)
        if file is None:
            raise LightnetsError(f"image id {image_id} ({file_name!r}) is listed in {json_name} "
                                 f"but missing from {source.path}")
        images.append((image_id, file, width, height))
        sizes[image_id], files[image_id] = (width, height), file_name
    boxes: dict = {}
    labels: dict = {}
    skipped = {}
    seen = set()
    for ann in annotations:
        if not isinstance(ann, dict):
            raise LightnetsError(f"{json_name}: annotation {str(ann)[:60]} is not an object")
        where = f"{json_name}: annotation id {ann.get('id')!r} (image id {ann.get('image_id')!r})"
        if ann.get("image_id") not in sizes:
            raise LightnetsError(f"{where}: no image with that id is listed")
        if ann.get("category_id") not in class_index:
            raise LightnetsError(f"{where}: unknown category id {ann.get('category_id')!r}; the categories are "
                                 f"{sorted(class_index)}")
        if ann.get("iscrowd", 0):
            skipped["crowd annotations"] = skipped.get("crowd annotations", 0) + 1
            continue
        try:
            x, y, w, h = map(float, ann["bbox"])
        except (KeyError, TypeError, ValueError):
            raise LightnetsError(f"{where}: bbox {ann.get('bbox')!r} is not four numbers [x, y, w, h]") from None
        width, height = sizes[ann["image_id"]]
        box = checked_box(x, y, w, h, width, height, where)
        key = (ann["image_id"], ann["category_id"], x, y, w, h)
        if key in seen:  # the same object annotated twice would count twice in training and in the metrics
            skipped["duplicate annotations"] = skipped.get("duplicate annotations", 0) + 1
            continue
        seen.add(key)
        boxes.setdefault(ann["image_id"], []).append(box)
        labels.setdefault(ann["image_id"], []).append(class_index[ann["category_id"]])
    names = ["object"] if class_agnostic else category_names
    return DetectionDataset(source, _records(boxes, labels, images, class_agnostic), names, skipped)


def _coco_image(image: object, json_name: str) -> tuple[int | str, str, int, int]:
    """A COCO ``images`` entry as ``(id, file_name, width, height)``; one clear line when a field is missing or bad."""
    try:
        image_id, file_name = image["id"], str(image["file_name"])  # type: ignore[index]
        width, height = int(image["width"]), int(image["height"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise LightnetsError(f"{json_name}: image {str(image)[:80]} needs an id, a file_name and whole-number "
                             f"width and height ({type(err).__name__}: {err})") from None
    if not isinstance(image_id, int | str) or width < 1 or height < 1:
        raise LightnetsError(f"{json_name}: image {str(image)[:80]} needs an integer or string id and a width "
                             "and height of at least 1")
    return image_id, file_name, width, height


KUZUSHIJI_HEADER = ["image_id", "labels"]


def read_kuzushiji(path: str | Path, csv_file: str | None = None, class_agnostic: bool = False
                   ) -> DetectionDataset:
    """The Kaggle Kuzushiji Recognition format: a csv ``image_id,labels`` whose labels read
    ``U+XXXX x y w h U+XXXX x y w h ...`` (an empty field is a page without characters), and the pages as
    ``<image_id>.jpg`` (or another image suffix) anywhere inside ``path`` (a directory or an archive).

    The classes are the codes that occur, sorted; where a ``unicode_translation.csv`` is present a code not
    in it is refused. ``class_agnostic`` makes every character one class, ``object``.
    """
    source = FileSource(path)
    if csv_file is None:
        candidates = [n for n in source.with_suffix(".csv") if source.read(n).decode("utf-8-sig", "replace")
                      .split("\n", 1)[0].strip().split(",") == KUZUSHIJI_HEADER]
        csv_file = source.only(candidates, "Kuzushiji csv (header image_id,labels)", "csv_file")
    elif csv_file not in source.names:
        raise LightnetsError(f"{source.path} has no file {csv_file!r}")
    known_codes = None
    translation = [n for n in source.names if PurePosixPath(n).name == "unicode_translation.csv"]
    if translation:
        rows = csv.DictReader(io.StringIO(_text(source, translation[0])))
        if "Unicode" not in (rows.fieldnames or []):
            raise LightnetsError(f"{translation[0]} in {source.path} has no Unicode column")
        known_codes = {row["Unicode"] for row in rows}

    pages = []
    given: dict[str, tuple[int, list[str]]] = {}  # page id -> (first line, its label fields)
    skipped: dict[str, int] = {}
    reader = csv.DictReader(io.StringIO(_text(source, csv_file)))
    if not set(KUZUSHIJI_HEADER) <= set(reader.fieldnames or []):
        raise LightnetsError(f"{csv_file} in {source.path} is not a Kuzushiji csv: its header must name the "
                             f"columns {','.join(KUZUSHIJI_HEADER)}")
    for line, row in enumerate(reader, start=2):
        page_id = row["image_id"]
        tokens = (row.get("labels") or "").split()
        if page_id in given:
            first, first_tokens = given[page_id]
            if tokens != first_tokens:
                raise LightnetsError(f"{csv_file} lines {first} and {line} both give page {page_id!r}, with "
                                     "different labels; give each page once")
            skipped["duplicate csv rows"] = skipped.get("duplicate csv rows", 0) + 1
            continue
        given[page_id] = (line, tokens)
        file = next((f for f in (source.find(page_id + s) for s in IMAGE_SUFFIXES) if f), None)
        if file is None:
            raise LightnetsError(f"{csv_file} line {line}: page {page_id!r} has no image "
                                 f"({page_id}.jpg or another image file) in {source.path}")
        if len(tokens) % 5:
            raise LightnetsError(f"{csv_file} line {line} (page {page_id!r}): labels must be groups of "
                                 f"'U+XXXX x y w h', got {len(tokens)} fields")
        pages.append((line, page_id, file, [tokens[i:i + 5] for i in range(0, len(tokens), 5)]))

    # The csv gives no image sizes, so each page's header is read (cheap: Pillow stops after it).
    sizes = {}
    for name, data in source.read_many(p[2] for p in pages):
        try:
            with Image.open(io.BytesIO(data)) as image:
                sizes[name] = image.size
        except Exception as err:  # Pillow raises many types for a damaged file
            raise LightnetsError(f"cannot decode image {name!r} in {source.path}: {err}") from None
    codes = sorted({group[0] for *_, groups in pages for group in groups})
    class_index = {code: i for i, code in enumerate(codes)}
    images, boxes, labels = [], {}, {}
    for line, page_id, file, groups in pages:
        width, height = sizes[file]
        images.append((page_id, file, width, height))
        for code, *numbers in groups:
            where = f"{csv_file} line {line} (page {page_id!r}), character {code}"
            if known_codes is not None and code not in known_codes:
                raise LightnetsError(f"{where}: unknown character code, not in {translation[0]}")
            try:
                x, y, w, h = map(float, numbers)
            except ValueError:
                raise LightnetsError(f"{where}: box {' '.join(numbers)!r} is not four numbers") from None
            boxes.setdefault(page_id, []).append(checked_box(x, y, w, h, width, height, where))
            labels.setdefault(page_id, []).append(class_index[code])
    names = ["object"] if class_agnostic else codes
    return DetectionDataset(source, _records(boxes, labels, images, class_agnostic), names, skipped)


def _text(source: FileSource, name: str) -> str:
    """File ``name`` of ``source`` as text (UTF-8, with or without a byte-order mark)."""
    try:
        return source.read(name).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise LightnetsError(f"{name} in {source.path} is not UTF-8 text ({err})") from None


def read_detection_data(path: str | Path, class_agnostic: bool = False) -> DetectionDataset:
    """COCO when ``path`` holds a .json file, else the Kuzushiji csv format."""
    source = FileSource(path)
    if source.with_suffix(".json"):
        return read_coco(path, class_agnostic=class_agnostic)
    return read_kuzushiji(path, class_agnostic=class_agnostic)


@dataclass
class DetectionBatch:
    """``images`` ``(B, 3, S, S)``: letterboxed uint8 from :meth:`DetectionCache.batch`, the normalised (augmented)
    float network input in training batches; their boxes ``(M, 4)`` in input pixels with ``labels`` and
    ``batch_index`` ``(M,)``; each image's letterbox ``transforms`` ``(B, 4)`` and dataset ``indices`` ``(B,)``.
    Chip batches add the boxes to leave out of the loss: ``ignore_boxes`` ``(N, 4)`` of images ``ignore_index``."""

    images: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    batch_index: torch.Tensor
    transforms: torch.Tensor
    indices: torch.Tensor
    ignore_boxes: torch.Tensor | None = None
    ignore_index: torch.Tensor | None = None


class DetectionCache:
    """A dataset decoded and letterboxed once to ``input_size``, held as tensors (on any device) so batches
    are gathered and augmented where the model runs."""

    def __init__(self, dataset: DetectionDataset, input_size: int, progress: bool = False) -> None:
        if input_size < 32:
            raise LightnetsError(f"input_size must be at least 32, got {input_size!r}")
        self.dataset = dataset
        self.input_size = input_size
        self.images = torch.empty(len(dataset), 3, input_size, input_size, dtype=torch.uint8)
        self.transforms = torch.empty(len(dataset), 4)
        position = {record.file: i for i, record in enumerate(dataset.records)}
        files = [record.file for record in dataset.records]
        for file, data in tqdm(dataset.source.read_many(files), total=len(files), disable=not progress,
                               desc="letterboxing", unit="img"):
            i = position[file]
            image, transform = letterbox_image(decode_record_image(data, dataset.records[i]), input_size)
            self.images[i] = torch.from_numpy(image).permute(2, 0, 1)
            self.transforms[i] = torch.tensor(transform)
        counts = [len(r.labels) for r in dataset.records]
        self.batch_index = torch.repeat_interleave(torch.arange(len(dataset)), torch.tensor(counts, dtype=torch.long))
        self.labels = torch.from_numpy(np.concatenate([r.labels for r in dataset.records] or [np.zeros(0, np.int64)]))
        image_boxes = torch.from_numpy(
            np.concatenate([r.boxes for r in dataset.records] or [np.zeros((0, 4), np.float32)]))
        self.boxes = to_input_boxes(image_boxes, self.transforms[self.batch_index])
        self.image_sizes = torch.tensor([[r.width, r.height] for r in dataset.records], dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def num_classes(self) -> int:
        return len(self.dataset.class_names)

    def to(self, device: torch.device | str) -> DetectionCache:
        for name in ("images", "transforms", "batch_index", "labels", "boxes", "image_sizes"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def batch(self, indices: torch.Tensor) -> DetectionBatch:
        indices = indices.to(self.images.device)
        slot = torch.full((len(self),), -1, dtype=torch.long, device=indices.device)
        slot[indices] = torch.arange(len(indices), device=indices.device)
        in_batch = slot[self.batch_index] >= 0
        return DetectionBatch(self.images[indices], self.boxes[in_batch], self.labels[in_batch],
                              slot[self.batch_index[in_batch]], self.transforms[indices], indices)

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
                ) -> Iterator[DetectionBatch]:
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            yield self.batch(order[start:start + batch_size])
