"""Seconds for ``lightnets.detect.tiles.merge_tiles`` to merge the boxes of one tiled large page.

Tiled inference on a 2400x3900 page at scales 1, 0.5 and the page at 512 px is 76 tiles; with ``top_k`` 500 per tile
(the large-pages benchmark's setting, so that mAP sees low scores) the merge gets up to 38,000 boxes. This times
the merge alone on boxes drawn like those: clusters of jittered duplicates (the same object seen by neighbouring
tiles and scales), sizes 16-450 px, a share of them cut at tile borders. Run it on two commits to compare them.

    python benchmarks/tile_merge.py --boxes 30000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lightnets.bench.machine import cpu_info
from lightnets.detect.tiles import merge_tiles


def page_boxes(count: int, seed: int = 0, copies: int = 3) -> tuple[torch.Tensor, ...]:
    """``count`` boxes on a 2400x3900 page: ``count / copies`` objects, each seen ``copies`` times, jittered."""
    g = torch.Generator().manual_seed(seed)
    objects = count // copies
    centres = torch.rand(objects, 2, generator=g) * torch.tensor([2400.0, 3900.0])
    sizes = 16 + torch.rand(objects, 1, generator=g) ** 2 * 434
    centre = centres.repeat_interleave(copies, 0) + torch.randn(objects * copies, 2, generator=g) * 3
    half = sizes.repeat_interleave(copies, 0) * (1 + 0.1 * torch.rand(objects * copies, 1, generator=g)) / 2
    boxes = torch.cat([centre - half, centre + half], dim=1)
    scores = torch.rand(len(boxes), generator=g)
    cut = torch.rand(len(boxes), generator=g) < 0.15
    return boxes, scores, torch.zeros(len(boxes), dtype=torch.long), cut


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=30000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    boxes, scores, labels, cut = page_boxes(args.boxes)
    times, kept = [], 0
    for _ in range(args.repeats):
        start = time.perf_counter()
        kept = len(merge_tiles(boxes, scores, labels, cut).boxes)
        times.append(time.perf_counter() - start)
    print(f"{cpu_info().describe()}; one thread")
    print(f"merge of {len(boxes)} boxes -> {kept} kept: median {statistics.median(times):.2f} s "
          f"over {args.repeats} runs")


if __name__ == "__main__":
    main()
