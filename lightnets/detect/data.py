"""Detection data: COCO json and Kuzushiji csv readers (a directory or a .zip/.tar/.tar.gz archive), checked
record by record, and a cache of letterboxed uint8 tensors from which batches are drawn on the device.

Boxes are held as ``x1, y1, x2, y2`` floats in image pixels. A bad record (a box outside its image, a
non-positive size, an image listed but missing, an unknown category) stops reading with one message naming
it, never a silently wrong target; only COCO crowd regions, which COCO itself excludes from training, are
skipped and counted in ``DetectionDataset.skipped``.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..data import decode_image
from ..errors import LightnetsError
from .transforms import letterbox_image, to_input_boxes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
EDGE_TOLERANCE = 1.0  # pixels a box may overhang its image (rounding in annotation tools); it is clipped


class FileSource:
    """The files of a directory, a .zip or a .tar/.tar.gz/.tgz archive, by path relative to its root."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise LightnetsError(f"{self.path} does not exist")
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        if self.path.is_dir():
            names = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]
        elif zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            names = [n for n in self._zip.namelist() if not n.endswith("/")]
        elif tarfile.is_tarfile(self.path):
            self._tar = tarfile.open(self.path, "r:*")
            names = [m.name for m in self._tar.getmembers() if m.isfile()]
        else:
            raise LightnetsError(f"{self.path} is neither a directory nor a .zip, .tar or .tar.gz archive")
        # Archive members may be spelled './dir/file'; they are looked up by their plain relative path.
        self._member = {PurePosixPath(n).as_posix(): n for n in names}
        self.names = sorted(self._member)
        self._by_basename: dict[str, list[str]] = {}
        for name in self.names:
            self._by_basename.setdefault(PurePosixPath(name).name, []).append(name)

    def __repr__(self) -> str:
        return f"FileSource({str(self.path)!r})"

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(self._member[name])
        if self._tar is not None:
            member = self._tar.extractfile(self._member[name])
            assert member is not None
            return member.read()
        return (self.path / name).read_bytes()

    def read_many(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """Yield ``(name, bytes)`` for ``names``; a tar is read once front to back (gzip cannot seek cheaply)."""
        if self._tar is None:
            for name in names:
                yield name, self.read(name)
            return
        wanted = {self._member[n]: n for n in names}
        for member in self._tar:
            if member.name in wanted:
                file = self._tar.extractfile(member)
                assert file is not None
                yield wanted[member.name], file.read()

    def find(self, file_name: str, relative_to: str = "") -> str | None:
        """The member for ``file_name``: as a path relative to ``relative_to`` or the root, else by unique basename."""
        for candidate in (PurePosixPath(relative_to, file_name).as_posix(), PurePosixPath(file_name).as_posix()):
            if candidate in self._by_basename.get(PurePosixPath(candidate).name, []):
                return candidate
        matches = self._by_basename.get(PurePosixPath(file_name).name, [])
        return matches[0] if len(matches) == 1 else None

    def with_suffix(self, suffix: str) -> list[str]:
        return [n for n in self.names if n.lower().endswith(suffix)]


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
    """RGB uint8 ``(H, W, 3)``; refuses an image whose size differs from the one its annotations were checked
    against, since every box would then be misplaced."""
    rgb = decode_image(data, None)
    if rgb.shape[:2] != (record.height, record.width):
        raise LightnetsError(f"image {record.file!r} (id {record.image_id!r}) is {rgb.shape[1]}x{rgb.shape[0]}, "
                             f"but its annotations say {record.width}x{record.height}")
    return rgb


def checked_box(x: float, y: float, w: float, h: float, width: int, height: int, where: str) -> list[float]:
    """``x, y, w, h`` as a clipped ``x1, y1, x2, y2``; a clear error for a non-positive size or a box outside."""
    if not (w > 0 and h > 0):
        raise LightnetsError(f"{where}: box [x={x}, y={y}, w={w}, h={h}] has a non-positive size; "
                             "width and height must be > 0")
    t = EDGE_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        raise LightnetsError(f"{where}: box [x={x}, y={y}, w={w}, h={h}] lies outside its {width}x{height} image")
    return [max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))]


def _single(source: FileSource, candidates: list[str], what: str, choose_with: str) -> str:
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise LightnetsError(f"{source.path} holds no {what}")
    raise LightnetsError(f"{source.path} holds several {what}s ({', '.join(candidates[:5])}); name one with "
                         f"{choose_with}")


def _records(boxes_by_image: dict, labels_by_image: dict, images: list[tuple], class_agnostic: bool
             ) -> list[DetectionRecord]:
    records = []
    for image_id, file, width, height in images:
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
    json_name = annotation_file or _single(source, source.with_suffix(".json"), "COCO .json annotation file",
                                           "annotation_file")
    if json_name not in source.names:
        raise LightnetsError(f"{source.path} has no file {json_name!r}")
    try:
        coco = json.loads(source.read(json_name))
        categories = sorted(coco["categories"], key=lambda c: c["id"])
        images_json, annotations = coco["images"], coco["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise LightnetsError(f"{json_name} is not a COCO detection file (images, annotations, categories): "
                             f"{err}") from None
    class_index = {c["id"]: i for i, c in enumerate(categories)}
    folder = PurePosixPath(json_name).parent.as_posix()
    images, sizes = [], {}
    for image in images_json:
        file = source.find(image["file_name"], folder)
        if file is None:
            raise LightnetsError(f"image id {image['id']} ({image['file_name']!r}) is listed in {json_name} "
                                 f"but missing from {source.path}")
        images.append((image["id"], file, int(image["width"]), int(image["height"])))
        sizes[image["id"]] = (int(image["width"]), int(image["height"]))
    boxes: dict = {}
    labels: dict = {}
    skipped = {}
    for ann in annotations:
        where = f"{json_name}: annotation id {ann.get('id')!r} (image id {ann.get('image_id')!r})"
        if ann.get("image_id") not in sizes:
            raise LightnetsError(f"{where}: no image with that id is listed")
        if ann.get("category_id") not in class_index:
            raise LightnetsError(f"{where}: unknown category id {ann.get('category_id')!r}; the categories are "
                                 f"{sorted(class_index)}")
        if ann.get("iscrowd", 0):
            skipped["crowd annotations"] = skipped.get("crowd annotations", 0) + 1
            continue
        width, height = sizes[ann["image_id"]]
        boxes.setdefault(ann["image_id"], []).append(checked_box(*map(float, ann["bbox"]), width, height, where))
        labels.setdefault(ann["image_id"], []).append(class_index[ann["category_id"]])
    names = ["object"] if class_agnostic else [c["name"] for c in categories]
    return DetectionDataset(source, _records(boxes, labels, images, class_agnostic), names, skipped)


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
        candidates = [n for n in source.with_suffix(".csv")
                      if source.read(n).decode("utf-8-sig").split("\n", 1)[0].strip().split(",") == KUZUSHIJI_HEADER]
        csv_file = _single(source, candidates, "Kuzushiji csv (header image_id,labels)", "csv_file")
    elif csv_file not in source.names:
        raise LightnetsError(f"{source.path} has no file {csv_file!r}")
    known_codes = None
    translation = [n for n in source.names if PurePosixPath(n).name == "unicode_translation.csv"]
    if translation:
        rows = csv.DictReader(io.StringIO(source.read(translation[0]).decode("utf-8-sig")))
        known_codes = {row["Unicode"] for row in rows}

    pages = []
    for line, row in enumerate(csv.DictReader(io.StringIO(source.read(csv_file).decode("utf-8-sig"))), start=2):
        page_id = row["image_id"]
        file = next((f for f in (source.find(page_id + s) for s in IMAGE_SUFFIXES) if f), None)
        if file is None:
            raise LightnetsError(f"{csv_file} line {line}: page {page_id!r} has no image "
                                 f"({page_id}.jpg or another image file) in {source.path}")
        tokens = (row.get("labels") or "").split()
        if len(tokens) % 5:
            raise LightnetsError(f"{csv_file} line {line} (page {page_id!r}): labels must be groups of "
                                 f"'U+XXXX x y w h', got {len(tokens)} fields")
        pages.append((line, page_id, file, [tokens[i:i + 5] for i in range(0, len(tokens), 5)]))

    # The csv gives no image sizes, so each page's header is read (cheap: Pillow stops after it).
    sizes = {}
    for name, data in source.read_many(p[2] for p in pages):
        with Image.open(io.BytesIO(data)) as image:
            sizes[name] = image.size
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
    return DetectionDataset(source, _records(boxes, labels, images, class_agnostic), names)


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
    ``batch_index`` ``(M,)``; each image's letterbox ``transforms`` ``(B, 4)`` and dataset ``indices`` ``(B,)``."""

    images: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    batch_index: torch.Tensor
    transforms: torch.Tensor
    indices: torch.Tensor


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
