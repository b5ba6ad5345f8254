"""Real-size synthetic book pages with the layout statistics of a real scanned Kuzushiji book.

The statistics are fitted to the CODH coordinate file of book 100249371 (``benchmarks/kuzushiji_layout.py`` writes
``lightnets/assets/kuzushiji_layout.json`` from it): the text block's height (sizes scale from the book's block to the
page's, and columns fill the block, so the characters per page follow), the page's typical character size, each
column's size against the page's, each character's against its column's, aspect ratios, the gaps between
characters down a column, the spacing between columns, how far down columns reach and how far characters stray
from their column's centre line. Each is kept as quantiles and sampled by inverse transform, so the pages follow the
book's distributions without a parametric guess.

On top of the layout, what makes real scans hard and the clean pages lack: small ruby-like marks beside some
columns, *not* annotated (as in the real data); a printed frame around the text block; paper texture and
blotches; bleed-through of the other side; uneven lighting; a dark scanner border. Glyphs come from every
TrueType font on the machine and from random brush strokes, so no few shapes can be learnt by heart.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ..errors import LightnetsError
from .synthetic import paper, write_pages

BOOK_CHAR = "\u5b57"  # every character's label: the pages have one class, a character
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:/Windows/Fonts")
# Code points most fonts draw: Latin, Greek and Cyrillic letters, digits and a few symbols.
GLYPH_POINTS = [*range(0x41, 0x5B), *range(0x61, 0x7B), *range(0x30, 0x3A), *range(0x391, 0x3AA), *range(0x3B1, 0x3CA),
                *range(0x410, 0x450), 0x26, 0x40, 0x23, 0x25, 0xA7, 0xB6]


@dataclass(frozen=True)
class Layout:
    """Quantiles (101 each, 0 to 1) of the fitted layout; see the module docstring and ``kuzushiji_layout.py``."""

    chars_per_page: list[float]  # not drawn from: the pages fill their text block, and the count follows
    block_height_px: list[float]  # the text block: top of the highest character to the bottom of the lowest
    page_size_px: list[float]  # median sqrt(w h) of a page's characters
    column_ratio: list[float]  # a column's median size / its page's
    char_ratio: list[float]  # a character's size / its column's median
    log_aspect: list[float]  # log(w / h)
    gap_ratio: list[float]  # vertical gap to the next character / the mean height of the two
    spacing_ratio: list[float]  # distance between neighbouring column centres / the mean of their sizes
    column_reach: list[float]  # a column's extent from the block's top / the block height
    stray_ratio: list[float]  # (character centre x - column centre x) / the column's size
    source: str = ""

    @classmethod
    def load(cls, path: str | Path | None = None) -> Layout:
        """The fitted layout shipped with lightnets, or one written by ``benchmarks/kuzushiji_layout.py``."""
        text = Path(path).read_text() if path else \
            resources.files("lightnets.assets").joinpath("kuzushiji_layout.json").read_text()
        values = json.loads(text)
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})


def sample(quantiles: list[float], rng: np.random.Generator, n: int | None = None) -> np.ndarray | float:
    """Inverse-transform draws from a distribution given by its quantiles at 0, 0.01, ..., 1."""
    levels = np.linspace(0, 1, len(quantiles))
    draws = np.interp(rng.uniform(0, 1, n), levels, quantiles)
    return draws if n is not None else float(draws)


@lru_cache(maxsize=1)
def system_fonts() -> tuple[str, ...]:
    """Every TrueType/OpenType file in the usual font folders (none: Pillow's built-in font stands in)."""
    found = []
    for folder in FONT_DIRS:
        if Path(folder).is_dir():
            found += [str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in (".ttf", ".otf")]
    return tuple(sorted(found))


def _font(rng: np.random.Generator, size: int) -> ImageFont.FreeTypeFont:
    fonts = system_fonts()
    if fonts:
        with contextlib.suppress(OSError):  # a damaged or unsupported font file: the built-in one stands in
            return ImageFont.truetype(fonts[int(rng.integers(len(fonts)))], size)
    return ImageFont.load_default(size=size)


def glyph(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """One character-like alpha mask of ``(height, width)``: a font glyph stretched to the box, or brush strokes."""
    side = max(width, height, 8)
    canvas = Image.new("L", (2 * side, 2 * side), 0)
    pen = ImageDraw.Draw(canvas)
    if rng.random() < 0.5:
        pen.text((side // 2, side // 4), chr(int(rng.choice(GLYPH_POINTS))), fill=255, font=_font(rng, side))
    else:  # cursive-like: a few thick curved strokes
        for _ in range(int(rng.integers(2, 6))):
            points = [tuple(side // 2 + rng.uniform(0, side, 2)) for _ in range(int(rng.integers(3, 6)))]
            pen.line(points, fill=255, width=max(1, int(side * rng.uniform(0.05, 0.12))), joint="curve")
    box = canvas.getbbox()
    if box is None:  # a font without that glyph draws nothing: a stroke stands in
        pen.line([(side // 2, side // 2), (side, side + side // 2)], fill=255, width=max(1, side // 10))
        box = canvas.getbbox()
    ink = canvas.crop(box).resize((max(1, width), max(1, height)), Image.Resampling.BILINEAR)
    return np.asarray(ink, dtype=np.float32) / 255


def _lighting(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A slow multiplicative gradient: one side of the scan brighter than the other."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * xs / width + np.sin(angle) * ys / height)
    return 1 + rng.uniform(0.05, 0.2) * (ramp - ramp.mean())


def _stamp(page: np.ndarray, alpha: np.ndarray, x: int, y: int, colour: np.ndarray) -> None:
    """Blend ``alpha`` (clipped to the page) in at ``(x, y)``."""
    height, width = alpha.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + width, page.shape[1]), min(y + height, page.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    a = alpha[y0 - y:y1 - y, x0 - x:x1 - x, None]
    page[y0:y1, x0:x1] = page[y0:y1, x0:x1] * (1 - a) + colour * a


def book_page(rng: np.random.Generator, width: int, height: int, layout: Layout
              ) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """One page ``(height, width, 3)`` uint8 and its annotated characters ``(x, y, w, h)`` (ruby marks are not)."""
    page = paper(rng, width, height).astype(np.float32)
    ink = np.array([35, 28, 22], np.float32) + rng.uniform(-15, 15, 3)
    margin_x, margin_y = int(width * rng.uniform(0.06, 0.1)), int(height * rng.uniform(0.06, 0.09))
    block = (margin_x, margin_y, width - margin_x, height - margin_y)
    _bleed_through(page, rng, block, layout)
    # Sizes scale with the page: the book's layout, stretched from its text block to this one.
    scale = (block[3] - block[1]) / float(np.median(layout.block_height_px))
    page_size = sample(layout.page_size_px, rng) * scale
    chars: list[tuple[int, int, int, int]] = []
    centre, previous = None, None
    while True:  # columns right to left across the text block
        size = page_size * sample(layout.column_ratio, rng)
        if centre is None:
            centre = block[2] - size / 2
        else:
            centre -= sample(layout.spacing_ratio, rng) * (size + previous) / 2
        if centre - size / 2 < block[0]:
            break
        chars += _column(page, rng, layout, centre, size, block, ink)
        previous = size
    _frame(page, rng, block, ink)
    page *= _lighting(rng, width, height)[..., None]
    _border(page, rng)
    return np.clip(page, 0, 255).astype(np.uint8), chars


def _column(page: np.ndarray, rng: np.random.Generator, layout: Layout, centre: float, size: float,
            block: tuple[int, int, int, int], ink: np.ndarray) -> list[tuple[int, int, int, int]]:
    """One column down from the block's top; sometimes ruby marks beside it."""
    top, bottom = block[1], block[1] + sample(layout.column_reach, rng) * (block[3] - block[1])
    y = top + rng.uniform(0, 0.3) * size
    placed, last_h = [], None
    ruby = rng.random() < 0.3
    while True:
        s = size * sample(layout.char_ratio, rng)
        aspect = math.exp(sample(layout.log_aspect, rng))
        w, h = max(4, int(round(s * math.sqrt(aspect)))), max(4, int(round(s / math.sqrt(aspect))))
        if last_h is not None:
            y += sample(layout.gap_ratio, rng) * (h + last_h) / 2
        if y + h > min(bottom, block[3]):
            break
        # A stray character near the page's edge moves in, so that every label lies on the page.
        w = min(w, page.shape[1])
        x = min(max(int(round(centre + sample(layout.stray_ratio, rng) * size - w / 2)), 0), page.shape[1] - w)
        _stamp(page, glyph(rng, w, h) * rng.uniform(0.7, 1.0), x, int(y), ink)
        placed.append((x, int(y), w, h))
        if ruby and rng.random() < 0.5:  # a small reading beside the character, never a label
            rs = max(4, int(size * rng.uniform(0.2, 0.32)))
            _stamp(page, glyph(rng, rs, rs) * 0.8, int(centre + size * 0.55), int(y + rng.uniform(0, h)), ink)
        y, last_h = y + h, h
    return placed


def _bleed_through(page: np.ndarray, rng: np.random.Generator, block: tuple[int, int, int, int],
                   layout: Layout) -> None:
    """The other side's columns, mirrored and faint, showing through the paper."""
    ghost = np.array([150, 140, 125], np.float32)
    x = block[0] + rng.uniform(0, 0.05) * (block[2] - block[0])
    size = sample(layout.page_size_px, rng) * (block[3] - block[1]) / float(np.median(layout.block_height_px))
    while x < block[2] - size:
        y = block[1]
        while y < block[3] - size:
            s = int(size * sample(layout.char_ratio, rng))
            _stamp(page, glyph(rng, s, s)[:, ::-1] * rng.uniform(0.05, 0.15), int(x), int(y), ghost)
            y += s * rng.uniform(1.1, 1.5)
        x += size * rng.uniform(1.4, 2.2)


def _frame(page: np.ndarray, rng: np.random.Generator, block: tuple[int, int, int, int], ink: np.ndarray) -> None:
    """A printed double frame around the text block, as in woodblock books."""
    image = Image.new("L", (page.shape[1], page.shape[0]), 0)
    pen = ImageDraw.Draw(image)
    pad = int(rng.uniform(0.01, 0.02) * page.shape[1])
    thick = max(2, page.shape[1] // 400)
    for gap, width in ((0, thick * 2), (thick * 4, thick)):
        pen.rectangle([block[0] - pad - gap, block[1] - pad - gap, block[2] + pad + gap, block[3] + pad + gap],
                      outline=255, width=width)
    alpha = np.asarray(image.filter(ImageFilter.GaussianBlur(1)), np.float32)[..., None] / 255
    page[:] = page * (1 - alpha * 0.9) + ink * alpha * 0.9


def _border(page: np.ndarray, rng: np.random.Generator) -> None:
    """Dark bands where the scanner saw past the paper, on one to three edges."""
    height, width = page.shape[:2]
    for edge in rng.choice(4, int(rng.integers(1, 4)), replace=False):
        band = int(rng.uniform(0.005, 0.025) * (width if edge in (0, 1) else height))
        shade = rng.uniform(15, 50)
        if edge == 0:
            page[:, :band] = shade
        elif edge == 1:
            page[:, width - band:] = shade
        elif edge == 2:
            page[:band] = shade
        else:
            page[height - band:] = shade


def book_pages(out_dir: str | Path, num_pages: int = 30, *, size: tuple[int, int] = (2400, 3900), seed: int = 0,
               layout: Layout | None = None) -> Path:
    """Write ``num_pages`` real-size book pages (``size`` width, height) to ``out_dir`` in the formats of
    ``synthetic_pages`` (COCO json and Kuzushiji csv, one class: ``character``); returns ``out_dir``. Another seed
    gives held-out pages."""
    if len(size) != 2 or not all(isinstance(v, int) and 512 <= v <= 20000 for v in size):
        raise LightnetsError(f"page size must be (width, height), each 512 to 20000 px, got {size!r}")
    layout = layout or Layout.load()
    rng = np.random.default_rng(seed)
    pages = (book_page(rng, size[0], size[1], layout) for _ in range(num_pages))
    return write_pages(out_dir, ((image, [(BOOK_CHAR, *box) for box in chars]) for image, chars in pages), BOOK_CHAR)
