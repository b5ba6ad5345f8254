"""Synthetic document pages for tests and the demo: dense vertical columns of characters, read right to left
as in Japanese books, on paper-like backgrounds, written both as COCO json and as a Kuzushiji csv.

The glyphs come from Pillow's built-in scalable font (no system font needed), so any machine with Pillow
produces the same pages for a given seed. Boxes are the glyphs' ink extents.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import LightnetsError

DEFAULT_ALPHABET = "ABCDEFGHJKLMNPRTUVWXY2345679"  # glyphs that stay distinct at small sizes


@lru_cache(maxsize=256)
def _glyph(char: str, size: int) -> np.ndarray:
    """The ink of ``char`` at font size ``size`` as a float alpha mask cropped to its extent."""
    font = ImageFont.load_default(size=size)
    canvas = Image.new("L", (2 * size, 2 * size), 0)
    ImageDraw.Draw(canvas).text((size // 2, 0), char, fill=255, font=font)
    box = canvas.getbbox()
    if box is None:
        raise LightnetsError(f"the built-in font draws nothing for {char!r}; choose another alphabet")
    return np.asarray(canvas.crop(box), dtype=np.float32) / 255


def paper(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Beige paper: a random tint, slow blotches from an upsampled coarse noise, and fine grain."""
    tint = np.array([236, 224, 198], np.float32) + rng.uniform(-18, 12, 3)
    coarse = Image.fromarray(rng.uniform(0, 255, (6, 6)).astype(np.uint8)).resize((width, height),
                                                                                 Image.Resampling.BICUBIC)
    blotches = (np.asarray(coarse, np.float32) / 255 - 0.5) * rng.uniform(10, 30)
    grain = rng.normal(0, rng.uniform(2, 7), (height, width))
    return tint + (blotches + grain)[..., None]


def _page(rng: np.random.Generator, width: int, height: int, alphabet: str, char_sizes: tuple[int, int]
          ) -> tuple[np.ndarray, list[tuple[str, int, int, int, int]]]:
    """One page and its characters as ``(char, x, y, w, h)``."""
    page = paper(rng, width, height)
    ink = np.array([40, 30, 25], np.float32) + rng.uniform(-20, 20, 3)
    margin_x, margin_y = int(width * rng.uniform(0.04, 0.08)), int(height * rng.uniform(0.04, 0.08))
    chars = []
    right = width - margin_x
    while True:
        size = int(rng.integers(char_sizes[0], char_sizes[1] + 1))
        if right - size < margin_x:
            break
        center_x = right - size / 2
        bottom = margin_y + (height - 2 * margin_y) * (rng.uniform(0.3, 1.0) if rng.random() < 0.3 else 1.0)
        y = margin_y + int(rng.integers(0, size))
        while True:
            char = alphabet[int(rng.integers(len(alphabet)))]
            glyph_size = max(6, int(size * rng.uniform(0.85, 1.0)))
            alpha = _glyph(char, glyph_size) * rng.uniform(0.75, 1.0)
            h, w = alpha.shape
            if y + h > bottom:
                break
            x = int(round(center_x - w / 2 + rng.uniform(-0.08, 0.08) * size))
            x = min(max(x, 0), width - w)
            region = page[y:y + h, x:x + w]
            page[y:y + h, x:x + w] = region * (1 - alpha[..., None]) + ink * alpha[..., None]
            chars.append((char, x, y, w, h))
            y += h + int(size * rng.uniform(0.1, 0.4))
        right -= size + int(size * rng.uniform(0.3, 0.8))
    return np.clip(page, 0, 255).astype(np.uint8), chars


def synthetic_pages(out_dir: str | Path, num_pages: int = 16, *, size: tuple[int, int] = (512, 512),
                    char_sizes: tuple[int, int] = (14, 32), alphabet: str = DEFAULT_ALPHABET, seed: int = 0) -> Path:
    """Write ``num_pages`` pages of ``size`` (width, height) to ``out_dir/images/`` with their boxes in
    ``annotations.json`` (COCO, one category per character) and ``labels.csv`` (Kuzushiji: ``image_id,labels``
    with ``U+XXXX x y w h`` groups) plus ``unicode_translation.csv``; returns ``out_dir``.

    Columns run top to bottom, right to left; each has its own character size from ``char_sizes`` and some end
    early, as on real pages. The same ``seed`` writes the same pages.
    """
    if num_pages < 1:
        raise LightnetsError(f"num_pages must be >= 1, got {num_pages!r}")
    low, high = char_sizes
    if not 6 <= low <= high or high > min(size) // 2:
        raise LightnetsError(f"char_sizes must satisfy 6 <= low <= high <= half the page, got {char_sizes!r}")
    if not alphabet or len(set(alphabet)) != len(alphabet):
        raise LightnetsError(f"alphabet must be non-empty without repeated characters, got {alphabet!r}")
    rng = np.random.default_rng(seed)
    pages = (_page(rng, size[0], size[1], alphabet, char_sizes) for _ in range(num_pages))
    return write_pages(out_dir, pages, alphabet)


def write_pages(out_dir: str | Path, pages: Iterable[tuple[np.ndarray, list[tuple[str, int, int, int, int]]]],
                alphabet: str) -> Path:
    """Write each page with its characters ``(char, x, y, w, h)`` as ``out_dir/images/page_NNNNN.png``, their boxes
    as ``annotations.json`` (COCO, one category per character of ``alphabet``) and ``labels.csv`` (Kuzushiji) with
    ``unicode_translation.csv``; returns ``out_dir``."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    category = {char: i + 1 for i, char in enumerate(alphabet)}
    images, annotations, rows = [], [], []
    for index, (page, chars) in enumerate(pages):
        page_id = f"page_{index:05d}"
        Image.fromarray(page).save(out / "images" / f"{page_id}.png")
        height, width = page.shape[:2]
        images.append({"id": index + 1, "file_name": f"images/{page_id}.png", "width": width, "height": height})
        for char, x, y, w, h in chars:
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": category[char],
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        rows.append([page_id, " ".join(f"U+{ord(c):04X} {x} {y} {w} {h}" for c, x, y, w, h in chars)])
    categories = [{"id": i, "name": char} for char, i in category.items()]
    (out / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image_id", "labels"], *rows])
    with open(out / "unicode_translation.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["Unicode", "char"], *([f"U+{ord(c):04X}", c] for c in alphabet)])
    return out
