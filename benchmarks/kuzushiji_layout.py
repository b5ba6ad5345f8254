"""Fit the book-page generator's layout (``lightnets.detect.pages``) to a real CODH coordinate file.

    python benchmarks/kuzushiji_layout.py --csv 100249371_coordinate.csv --out lightnets/assets/kuzushiji_layout.json

The CODH file lists each character of a book: ``Unicode, Image, X, Y, Block ID, Char ID, Width, Height`` (X, Y the
box's top-left corner, px). Per page, characters are grouped into columns by their centre line (right to left, a
character joins the current column when its centre lies within 0.6 of the larger of its width and the column's
typical width), ordered down each column, and measured: characters per page, the height of the text block (top of
the highest character to the bottom of the lowest), the page's median size ``sqrt(w h)``,
each column's median against the page's, each character's against its column's, ``log(w / h)``, the gap to the
next character against their mean height, the distance between neighbouring column centres against their mean size,
how far each column reaches down the page's text block, and each character's offset from its column's centre line.
Each is written as its 101 quantiles, with the counts they come from; the script prints a summary.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

QUANTILES = np.linspace(0, 1, 101)
JOIN = 0.6  # a character joins a column when its centre is this close, in widths


def read_pages(path: Path) -> dict[str, np.ndarray]:
    """Each page's boxes ``(n, 4)``: x, y, w, h."""
    pages: dict[str, list[list[float]]] = defaultdict(list)
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            pages[row["Image"]].append([float(row["X"]), float(row["Y"]), float(row["Width"]), float(row["Height"])])
    return {name: np.array(boxes) for name, boxes in pages.items()}


def columns_of(boxes: np.ndarray) -> list[np.ndarray]:
    """The page's columns, right to left, each its box indices top to bottom."""
    centre = boxes[:, 0] + boxes[:, 2] / 2
    columns: list[list[int]] = []
    for i in np.argsort(-centre, kind="stable"):
        if columns:
            members = columns[-1]
            line = np.median(centre[members])
            width = np.median(boxes[members, 2])
            if abs(centre[i] - line) < JOIN * max(boxes[i, 2], width):
                members.append(int(i))
                continue
        columns.append([int(i)])
    return [np.array(sorted(c, key=lambda j: boxes[j, 1])) for c in columns]


def fit(pages: dict[str, np.ndarray]) -> dict[str, object]:
    found: dict[str, list[float]] = defaultdict(list)
    for boxes in pages.values():
        size = np.sqrt(boxes[:, 2] * boxes[:, 3])
        page_median = float(np.median(size))
        found["chars_per_page"].append(len(boxes))
        found["page_size_px"].append(page_median)
        found["log_aspect"] += np.log(boxes[:, 2] / boxes[:, 3]).tolist()
        top, bottom = boxes[:, 1].min(), (boxes[:, 1] + boxes[:, 3]).max()
        found["block_height_px"].append(float(bottom - top))
        previous = None
        for column in columns_of(boxes):
            col_size = float(np.median(size[column]))
            line = float(np.median(boxes[column, 0] + boxes[column, 2] / 2))
            found["column_ratio"].append(col_size / page_median)
            found["char_ratio"] += (size[column] / col_size).tolist()
            found["stray_ratio"] += ((boxes[column, 0] + boxes[column, 2] / 2 - line) / col_size).tolist()
            found["column_reach"].append(float(((boxes[column, 1] + boxes[column, 3]).max() - top) /
                                               max(bottom - top, 1)))
            heights = boxes[column, 3]
            gaps = boxes[column[1:], 1] - (boxes[column[:-1], 1] + heights[:-1])
            found["gap_ratio"] += (gaps / ((heights[1:] + heights[:-1]) / 2)).tolist()
            if previous is not None:
                found["spacing_ratio"].append((previous[0] - line) / ((previous[1] + col_size) / 2))
            previous = (line, col_size)
    layout: dict[str, object] = {name: np.quantile(values, QUANTILES).round(4).tolist()
                                 for name, values in found.items()}
    layout["counts"] = {name: len(values) for name, values in found.items()}
    return layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", required=True, help="a CODH <book>_coordinate.csv")
    parser.add_argument("--out", required=True, help="the layout json to write")
    args = parser.parse_args()
    pages = read_pages(Path(args.csv))
    layout = fit(pages)
    layout["source"] = f"{Path(args.csv).name}: {len(pages)} pages, {sum(len(b) for b in pages.values())} characters"
    Path(args.out).write_text(json.dumps(layout, indent=1) + "\n")
    for name, values in layout.items():
        if isinstance(values, list):
            q = np.asarray(values)
            print(f"{name:15s} n={layout['counts'][name]:6d}  p5 {q[5]:8.3f}  median {q[50]:8.3f}  p95 {q[95]:8.3f}")
    print(f"wrote {args.out} ({layout['source']})")


if __name__ == "__main__":
    main()
