"""Keypoint data for heat-map pose models (CPM): the LSP 14-joint skeleton, and readers for the official LSP/LSPet
``joints.mat`` + ``images/``, the ``keypoints.json`` of ``shared/datasets/lspet.md`` and COCO keypoints, from a
directory or a .zip/.tar/.tar.gz archive (read through ``detect.files.FileSource``).

    data = read_keypoint_data("lspet.tar")                      # whichever of the three layouts it holds
    train, val = data.split_by_name("im09001", "im10000")       # hold out im09001-im10000 (lspet.md's suggestion)

A record's ``visible`` means *labelled*: the coordinate is a real annotation and may be used as a target; the
coordinates of unlabelled joints are kept as given and must not be used. A labelled joint more than
``EDGE_TOLERANCE`` px outside its image is marked unlabelled and counted in ``skipped["keypoint outside image"]``
(the rest of the person is still good); a record left with no labelled joint is dropped and counted; an image that
is listed but missing is dropped and counted (all missing is an error). A label file of the wrong shape or
structure, or a coordinate that is not a finite number, stops reading with one ``LightnetsError`` line naming it.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from ..detect.files import IMAGE_SUFFIXES, FileSource
from ..errors import LightnetsError

# LSP/LSPet order (the datasets' README; person-centric left/right).
LSP_JOINTS = ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
              "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top"]
LSP_FLIP_PAIRS = [(0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9)]
LSP_LIMBS = [(0, 1), (1, 2), (3, 4), (4, 5), (6, 7), (7, 8), (9, 10), (10, 11), (2, 8), (3, 9), (2, 3), (8, 12),
             (9, 12), (12, 13)]  # the skeleton of lspet.md's keypoints.json: legs, arms, torso, neck to head
# The torso size PCK is relative to: left shoulder to right hip. CPM's own LSP benchmark (run_benchmark.m,
# util_get_bodysize_size: norm(joints(10) - joints(3)), 1-based, "following evalLSP_official") uses this diagonal;
# the other diagonal (right shoulder to left hip) is as long on average but would not match the published numbers.
LSP_TORSO = (9, 2)
EDGE_TOLERANCE = 2.0  # px a labelled joint may lie past the image edge (labelling slop: im00024's head at y=-1.2)
PERSON_BOX_SCALE = 1.25  # the labelled joints' extent is widened by this: head, hands and feet reach past the joints


def flip_permutation(flip_pairs: Iterable[tuple[int, int]], num_joints: int) -> list[int]:
    """The joint order of a horizontally flipped image (``keypoints[:, perm]``): each left joint becomes its right
    twin, so a flipped person keeps person-centric labels."""
    perm = list(range(num_joints))
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return perm


def flip_pairs_from_names(names: Sequence[str]) -> list[tuple[int, int]]:
    """The index pairs ``(i, j)``, ``i < j``, of names that differ only by the word left/right (``left_eye``,
    ``right_eye``), so a COCO or custom skeleton flips without a hand-written table."""
    index = {name.lower(): i for i, name in enumerate(names)}
    pairs = set()
    for i, name in enumerate(names):
        twin = re.sub("left|right", lambda m: {"left": "right", "right": "left"}[m[0]], name.lower())
        if twin != name.lower() and twin in index:
            pairs.add((min(i, index[twin]), max(i, index[twin])))
    return sorted(pairs)


@dataclass
class KeypointRecord:
    """One person: the image file in the source (and its size), its joints in image pixels and which are labelled."""

    image: str
    keypoints: np.ndarray  # (K, 2) float32, x right and y down in image pixels
    visible: np.ndarray  # (K,) bool: labelled, so usable as a target
    width: int
    height: int


@dataclass
class KeypointDataset:
    """Records plus the skeleton they follow and where their images are read from."""

    source: FileSource
    records: list[KeypointRecord]
    joint_names: list[str]
    flip_pairs: list[tuple[int, int]]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count (records, or joints for keypoints)
    limbs: list[tuple[int, int]] = field(default_factory=list)  # joint pairs to draw

    def __len__(self) -> int:
        return len(self.records)

    def subset(self, indices: Iterable[int]) -> KeypointDataset:
        return KeypointDataset(self.source, [self.records[i] for i in indices], self.joint_names, self.flip_pairs,
                               self.skipped, self.limbs)

    def split_by_name(self, first: str, last: str) -> tuple[KeypointDataset, KeypointDataset]:
        """``(rest, held_out)``: the held-out part is the records whose image name (without folder and suffix,
        numbers compared as numbers) lies in ``[first, last]``, so ``im09001``-``im10000`` is one call."""
        lo, hi = name_key(first), name_key(last)
        if lo > hi:
            raise LightnetsError(f"split_by_name: first {first!r} comes after last {last!r}")
        inside = [lo <= name_key(r.image) <= hi for r in self.records]
        if not any(inside):
            names = sorted((PurePosixPath(r.image).stem for r in self.records), key=name_key)
            span = f"{names[0]} to {names[-1]}" if names else "no records"
            raise LightnetsError(f"no image name lies in {first}-{last}; the names run from {span}")
        return (self.subset(i for i, x in enumerate(inside) if not x),
                self.subset(i for i, x in enumerate(inside) if x))


def name_key(name: str) -> tuple:
    """Sort key of an image name: its stem split into text and numbers (``im9001`` and ``im09001`` are equal)."""
    parts = re.split(r"(\d+)", PurePosixPath(name).stem)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def person_box(keypoints: np.ndarray, visible: np.ndarray, scale: float = PERSON_BOX_SCALE
               ) -> tuple[float, float, float]:
    """``(cx, cy, side)``: the square centred on the labelled joints' extent, its side the longer extent times
    ``scale`` (at least 1 px), the person-centred crop CPM trains and tests on."""
    points = np.asarray(keypoints, dtype=np.float64)[np.asarray(visible, dtype=bool)]
    if not len(points):
        raise LightnetsError("person_box needs at least one labelled keypoint")
    low, high = points.min(axis=0), points.max(axis=0)
    centre = (low + high) / 2
    return float(centre[0]), float(centre[1]), max(float((high - low).max()) * scale, 1.0)


def _add(skipped: dict[str, int], reason: str, count: int = 1) -> None:
    if count:
        skipped[reason] = skipped.get(reason, 0) + count


def _record(file: str, width: int, height: int, joints: np.ndarray, labelled: np.ndarray, names: Sequence[str],
            where: str, skipped: dict[str, int]) -> KeypointRecord | None:
    """A checked record from ``joints`` (K, 2); ``None`` (counted) when no joint is left labelled."""
    bad = ~np.isfinite(joints).all(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        raise LightnetsError(f"{where}: joint {names[k]} has a coordinate that is not a finite number "
                             f"({joints[k, 0]}, {joints[k, 1]})")
    x, y, t = joints[:, 0], joints[:, 1], EDGE_TOLERANCE
    outside = labelled & ((x < -t) | (y < -t) | (x > width + t) | (y > height + t))
    _add(skipped, "keypoint outside image", int(outside.sum()))
    labelled = labelled & ~outside
    if not labelled.any():
        _add(skipped, "no labelled keypoint")
        return None
    return KeypointRecord(file, joints.astype(np.float32), labelled, width, height)


def _dataset(source: FileSource, records: list[KeypointRecord | None], listed: int, label_file: str,
             names: list[str], limbs: list[tuple[int, int]], skipped: dict[str, int]) -> KeypointDataset:
    """The dataset of the records kept; an error when every listed image is missing or no person is left."""
    if listed and skipped.get("missing image", 0) == listed:
        raise LightnetsError(f"none of the {listed} images listed in {label_file} is in {source.path}")
    kept = [r for r in records if r is not None]
    if not kept:
        raise LightnetsError(f"{label_file} in {source.path} gives no person with a labelled keypoint "
                             f"(skipped: {skipped or 'nothing'})")
    return KeypointDataset(source, kept, names, flip_pairs_from_names(names), skipped, limbs)


def _image_sizes(source: FileSource, files: list[str]) -> dict[str, tuple[int, int]]:
    """``(width, height)`` of each file, from its header (Pillow stops there); the label file gives no sizes."""
    sizes = {}
    for name, data in source.read_many(files):
        try:
            with Image.open(io.BytesIO(data)) as image:
                sizes[name] = image.size
        except Exception as err:  # Pillow raises many types for a damaged file
            raise LightnetsError(f"cannot decode image {name!r} in {source.path}: {err}") from None
    return sizes


def read_lsp_mat(path: str | Path, mat_file: str | None = None) -> KeypointDataset:
    """The official LSP/LSPet layout: ``joints.mat`` (variable ``joints``) beside ``images/imNNNN(N).jpg``, column
    ``i`` being image number ``i + 1``.

    LSPet's ``(14, 3, N)`` has rows x, y, visible, and 0 (outside the frame, or a (0, 0) placeholder) is unlabelled.
    LSP's original ``(3, 14, N)`` labels every joint (occluded ones by estimate; its third row flags occlusion, read
    as ``1 - flag`` by CPM's own converter), so there all joints are labelled. Needs scipy (optional).
    """
    source = FileSource(path)
    return _from_mat(source, mat_file or source.only(_named(source, "joints.mat"), "joints.mat",
                                                         "mat_file"))


def _named(source: FileSource, file_name: str) -> list[str]:
    return [n for n in source.names if PurePosixPath(n).name == file_name]


def _from_mat(source: FileSource, mat_file: str) -> KeypointDataset:
    if mat_file not in source.names:
        raise LightnetsError(f"{source.path} has no file {mat_file!r}")
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ImportError:
        raise LightnetsError(f"reading {mat_file} needs scipy: pip install scipy, or give the labels as a "
                             "keypoints.json (joint_names, images) instead") from None
    try:
        variables = loadmat(io.BytesIO(source.read(mat_file)))
    except (MatReadError, ValueError, TypeError, NotImplementedError) as err:  # not a MATLAB 5 file, or damaged
        raise LightnetsError(f"cannot read {mat_file} in {source.path} as a MATLAB file: {err}") from None
    if "joints" not in variables:
        raise LightnetsError(f"{mat_file} in {source.path} has no variable 'joints'")
    try:
        joints = np.asarray(variables["joints"], dtype=np.float64)
    except (ValueError, TypeError):
        raise LightnetsError(f"{mat_file} in {source.path}: 'joints' is not a numeric array") from None
    if joints.ndim == 3 and joints.shape[:2] == (14, 3):
        xy, labelled = joints[:, :2].transpose(2, 0, 1), joints[:, 2].T > 0
    elif joints.ndim == 3 and joints.shape[:2] == (3, 14):
        xy, labelled = joints[:2].transpose(2, 1, 0), np.ones((joints.shape[2], 14), dtype=bool)
    else:
        raise LightnetsError(f"{mat_file} in {source.path}: 'joints' has shape {joints.shape}; accepted are "
                             "(14, 3, N) (LSPet: x, y, visible) and (3, 14, N) (LSP)")
    folder = PurePosixPath(mat_file).parent / "images"
    numbered = {}
    for name in source.names:
        match = re.fullmatch(r"im(\d+)", PurePosixPath(name).stem)
        if match and PurePosixPath(name).parent == folder and name.lower().endswith(IMAGE_SUFFIXES):
            numbered[int(match[1])] = name
    skipped: dict[str, int] = {}
    files = [numbered.get(i + 1) for i in range(len(xy))]
    _add(skipped, "missing image", files.count(None))
    sizes = _image_sizes(source, [f for f in files if f is not None])
    records = [_record(f, *sizes[f], xy[i], labelled[i], LSP_JOINTS, f"{mat_file} column {i + 1} ({f})", skipped)
               for i, f in enumerate(files) if f is not None]
    return _dataset(source, records, len(files), f"{mat_file} (its images as {folder}/imNNNNN.jpg)", list(LSP_JOINTS),
                    list(LSP_LIMBS), skipped)


def _load_json(source: FileSource, name: str) -> object:
    if name not in source.names:
        raise LightnetsError(f"{source.path} has no file {name!r}")
    try:
        return json.loads(source.read(name))
    except ValueError as err:  # bad json, or bytes that are not text
        raise LightnetsError(f"{name} in {source.path} is not valid json: {err}") from None


def _joint_array(values: object, count: int, where: str) -> np.ndarray:
    """``(count, 3)`` float64 ``x, y, flag`` from a nested list or a COCO flat list; one line when it is neither."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        raise LightnetsError(f"{where}: keypoints must be {count} triples of numbers [x, y, v], got "
                             f"{str(values)[:60]}") from None
    if array.size != 3 * count:
        raise LightnetsError(f"{where}: keypoints must be {count} triples of numbers [x, y, v], got "
                             f"{array.size} numbers")
    return array.reshape(count, 3)


def _size(entry: dict, where: str) -> tuple[int, int]:
    try:
        width, height = int(entry["width"]), int(entry["height"])
    except (KeyError, TypeError, ValueError, OverflowError):
        raise LightnetsError(f"{where} needs a whole-number width and height") from None
    if width < 1 or height < 1:
        raise LightnetsError(f"{where}: width and height must be at least 1, got {width}x{height}")
    return width, height


def _limbs(pairs: object, count: int, base: int, where: str) -> list[tuple[int, int]]:
    """Index pairs from a skeleton list (``base`` 1 for COCO's 1-based one), each joint within ``count``."""
    try:
        limbs = [(int(a) - base, int(b) - base) for a, b in pairs]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise LightnetsError(f"{where}: skeleton must be a list of joint index pairs") from None
    if any(not (0 <= j < count) for limb in limbs for j in limb):
        raise LightnetsError(f"{where}: skeleton indices must lie in {base}..{count - 1 + base}")
    return limbs


def read_keypoints_json(path: str | Path, json_file: str | None = None) -> KeypointDataset:
    """``keypoints.json`` of ``shared/datasets/lspet.md``: ``joint_names``, ``skeleton`` (0-based pairs) and
    ``images`` of ``{file, width, height, keypoints: [[x, y, visible], ...]}``; visible 0 is unlabelled."""
    source = FileSource(path)
    json_file = json_file or source.only(_named(source, "keypoints.json"), "keypoints.json", "json_file")
    return _from_keypoints_json(source, json_file, _load_json(source, json_file))


def _from_keypoints_json(source: FileSource, json_file: str, data: object) -> KeypointDataset:
    try:
        names = [str(n) for n in data["joint_names"]]  # type: ignore[index]
        images = list(data["images"])  # type: ignore[index]
        limbs = _limbs(data.get("skeleton", []), len(names), 0, json_file)  # type: ignore[union-attr]
    except (KeyError, TypeError) as err:
        raise LightnetsError(f"{json_file} in {source.path} is not a keypoints.json (joint_names, images with file, "
                             f"width, height and keypoints): {type(err).__name__}: {err}") from None
    folder = PurePosixPath(json_file).parent.as_posix()
    records, skipped = [], {}
    for i, entry in enumerate(images):
        where = f"{json_file} image {i}"
        if not isinstance(entry, dict) or "file" not in entry or "keypoints" not in entry:
            raise LightnetsError(f"{where}: {str(entry)[:80]} needs a file, a width, a height and keypoints")
        where = f"{json_file} image {i} ({entry['file']})"
        width, height = _size(entry, where)
        joints = _joint_array(entry["keypoints"], len(names), where)
        file = source.find(str(entry["file"]), folder)
        if file is None:
            _add(skipped, "missing image")
            continue
        records.append(_record(file, width, height, joints[:, :2], joints[:, 2] > 0, names, where, skipped))
    return _dataset(source, records, len(images), json_file, names, limbs, skipped)


def read_coco_keypoints(path: str | Path, json_file: str | None = None) -> KeypointDataset:
    """COCO keypoints: ``images`` (id, file_name, width, height), ``annotations`` (image_id, ``keypoints``
    ``[x, y, v] * K``), ``categories[0]`` (``keypoints`` names, 1-based ``skeleton``). One record per person;
    v 0 is unlabelled, 1 (labelled, hidden) and 2 (visible) are labelled. Crowd regions are skipped, counted."""
    source = FileSource(path)
    json_file = json_file or source.only(source.with_suffix(".json"), "COCO .json", "json_file")
    return _from_coco(source, json_file, _load_json(source, json_file))


def _from_coco(source: FileSource, json_file: str, coco: object) -> KeypointDataset:
    try:
        category = coco["categories"][0]  # type: ignore[index]
        names = [str(n) for n in category["keypoints"]]
        limbs = _limbs(category.get("skeleton", []), len(names), 1, json_file)
        images = {image["id"]: image for image in coco["images"]}  # type: ignore[index]
        annotations = list(coco["annotations"])  # type: ignore[index]
    except (KeyError, TypeError, IndexError, AttributeError) as err:
        raise LightnetsError(f"{json_file} in {source.path} is not a COCO keypoints file (images, annotations, "
                             f"categories with keypoints names): {type(err).__name__}: {err}") from None
    folder = PurePosixPath(json_file).parent.as_posix()
    files: dict = {}
    records, skipped = [], {}
    for ann in annotations:
        if not isinstance(ann, dict):
            raise LightnetsError(f"{json_file}: annotation {str(ann)[:60]} is not an object")
        where = f"{json_file} annotation id {ann.get('id')!r} (image id {ann.get('image_id')!r})"
        image = images.get(ann["image_id"]) if isinstance(ann.get("image_id"), int | str) else None
        if not isinstance(image, dict) or "file_name" not in image:
            raise LightnetsError(f"{where}: no image with that id and a file_name is listed")
        if ann.get("iscrowd", 0):
            _add(skipped, "crowd annotation")
            continue
        joints = _joint_array(ann.get("keypoints"), len(names), where)
        if image["id"] not in files:
            files[image["id"]] = source.find(str(image["file_name"]), folder)
            _add(skipped, "missing image", int(files[image["id"]] is None))
        if files[image["id"]] is None:
            continue
        width, height = _size(image, where)
        records.append(_record(files[image["id"]], width, height, joints[:, :2], joints[:, 2] > 0, names, where,
                               skipped))
    return _dataset(source, records, len(files), json_file, names, limbs, skipped)


def labels_on_source(source: str | Path | FileSource, labels: dict, name: str = "labels.json") -> KeypointDataset:
    """The records of a keypoints.json's content ``labels`` (called ``name`` in messages) whose image files are in
    ``source``, relative to its root: labels kept apart from their images, as bootstrapping writes them."""
    return _from_keypoints_json(source if isinstance(source, FileSource) else FileSource(source), name, labels)


def read_keypoint_data(path: str | Path, label_file: str | None = None) -> KeypointDataset:
    """Whichever layout ``path`` holds: a ``joints.mat`` (the official LSP/LSPet files), else a ``keypoints.json``
    or the one ``.json`` (or ``label_file``), read as COCO when it has ``annotations``, else as keypoints.json."""
    source = FileSource(path)
    if label_file is None:
        mats = _named(source, "joints.mat")
        if mats:
            return _from_mat(source, source.only(mats, "joints.mat", "label_file"))
        label_file = source.only(_named(source, "keypoints.json") or source.with_suffix(".json"),
                             "joints.mat or .json label", "label_file")
    elif label_file.lower().endswith(".mat"):
        return _from_mat(source, label_file)
    data = _load_json(source, label_file)
    if isinstance(data, dict) and "annotations" in data:
        return _from_coco(source, label_file, data)
    if isinstance(data, dict) and "joint_names" in data:
        return _from_keypoints_json(source, label_file, data)
    raise LightnetsError(f"{label_file} in {source.path} is neither COCO keypoints (images, annotations, "
                         "categories) nor a keypoints.json (joint_names, images)")
