"""The "Large pages" table of docs/DETECTION.md: whole letterboxed pages against SNIPER chips with tiled inference, at
one CPU-time budget per row, on real-size book pages.

    lightnets detect synth pages --preset kuzushiji --pages 120 --seed 0
    lightnets detect synth heldout --preset kuzushiji --pages 30 --seed 1
    python benchmarks/large_pages.py --train pages --val heldout --budget-min 30 --out docs/large_pages.json

Each row's figures are also kept in its run folder (``row.json``); ``--reuse`` keeps what a stopped run had trained
or measured. Rows can also run as separate one-thread processes side by side (``--rows chips_2stack --threads 1
--out b.json`` beside the others), joined by ``--merge a.json b.json --out docs/large_pages.json``.

Rows (``--rows``, each trained from the same seed on the same pages for ``--budget-min`` CPU minutes):

- ``whole512``, ``whole1024``: the page letterboxed to 512 or 1024 px, detected the same way.
- ``chips``: SNIPER positive chips (512 px, at scales 1 and 0.5 and the page at 512 px, valid sizes 0-120, 80-300 and
  250 px up; see ``PAGE_SCALES``), tiled inference at the same scales.
- ``chips_neg``: the same plus negative chips. The weak detector whose proposals make them is trained on positive
  chips only for ``--weak-share`` of the budget, and the row for the rest, so the row's total is the same budget.
- ``chips_2stack``: ``chips`` with 2 stacks (the seed's stacking idea), for the strict metric.

Per row: Kuzushiji F1, mAP@0.5 and mAP@0.5:0.95 of the last weights on every held-out page (after each epoch only
``--monitor-pages`` of them are evaluated, to pick ``best``), the pixels processed per training epoch (pages
x input^2 for whole pages, chips x 512^2 for chips) against the whole pyramid, and the median seconds per held-out page
of inference on this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from lightnets.bench.machine import cpu_info
from lightnets.detect import read_detection_data, train_detector
from lightnets.detect.chip_data import PageCache
from lightnets.detect.chips import ChipConfig
from lightnets.detect.infer import evaluate_detector, load_detector
from lightnets.detect.task import detect_images
from lightnets.detect.tiles import detect_tiled, tile_config
from lightnets.report import format_markdown

ROWS = ("whole512", "whole1024", "chips", "chips_neg", "chips_2stack")
# Chip scales for pages, not SNIPER's COCO ones: characters of 16-450 px need no 3x view (512 px chips at 1x already
# hold them), and a 3x pass over a 2400x3900 page is ~800 tiles, minutes per page on a CPU. Ranges in page px.
PAGE_SCALES = (1.0, 0.5, 512.0)
PAGE_RANGES = ((0.0, 120.0), (80.0, 300.0), (250.0, float("inf")))
MAX_EPOCHS = 1000  # never reached: the budget ends every row


def train_row(row: str, args: argparse.Namespace, out: Path, chips: ChipConfig) -> Path:
    """Train one row into ``out/row`` and return its run folder."""
    # Per-epoch monitoring on a few held-out pages only: tiling a page at 3x is hundreds of tiles.
    monitor = read_detection_data(args.val, class_agnostic=True)
    common: dict[str, Any] = {"class_agnostic": True, "top_k": args.top_k, "threads": args.threads,
                              "progress": False, "epochs": MAX_EPOCHS, "backbone": args.backbone, "exist_ok": True,
                              "val_data": monitor.subset(range(min(args.monitor_pages, len(monitor)))),
                              **({"batch_size": args.batch_size} if args.batch_size else {})}
    if row.startswith("whole"):
        return train_detector(args.train, input_size=int(row[5:]), budget_min=args.budget_min, out=out / row,
                              **common).run_dir
    stacks = 2 if row == "chips_2stack" else 1
    if row != "chips_neg":
        return train_detector(args.train, chips=chips, stacks=stacks, budget_min=args.budget_min, out=out / row,
                              **common).run_dir
    weak = train_detector(args.train, chips=chips, budget_min=args.budget_min * args.weak_share,
                          out=out / "chips_weak", **common).run_dir
    return train_detector(args.train, chips=chips, negatives_from=weak / "last", out=out / row,
                          budget_min=args.budget_min * (1 - args.weak_share), **common).run_dir


def trained(run: Path) -> bool:
    """Whether ``run`` holds a finished training: its last weights, and a last epoch that the budget ended."""
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
    return (run / "last.safetensors").is_file() and bool(lines) and json.loads(lines[-1]).get("budget_stop", False)


def seconds_per_page(run: Path, val: str, chips: bool, top_k: int, pages: int = 5) -> float:
    """Median wall seconds to detect one held-out page (the first ``pages``), the row's way."""
    model = load_detector(run / "last")
    data = read_detection_data(val, class_agnostic=True)
    cache = PageCache(data.subset(range(min(pages, len(data)))))
    meta = model.checkpoint_meta
    tiles = tile_config("auto", meta["input_size"], meta.get("tiles")) if chips else None
    times = []
    for page in cache.pages:
        image = np.asarray(page)
        start = time.perf_counter()
        if tiles is None:
            detect_images(model, [image], model.checkpoint_meta["input_size"], top_k)
        else:
            detect_tiled(model, image, tiles, top_k)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(result: dict[str, Any], out: str | None) -> None:
    """Print the rows as markdown and write them as JSON to ``out``."""
    print(f"CPU: {result['cpu']}; {result['threads']} thread(s); {result['budget_min']} CPU min per row")
    print(format_markdown([{"training": r["row"], "CPU min": f"{r['cpu_min']:.1f}", "epochs": str(r["epochs"]),
                            "F1": f"{r['f1']:.3f}",
                            "mAP@0.5": "-" if r["map50"] is None else f"{r['map50']:.3f}",
                            "mAP": "-" if r["map"] is None else f"{r['map']:.3f}",
                            "Mpx per epoch": f"{r['pixels_per_epoch'] / 1e6:.1f}",
                            "of the pyramid": "-" if r["pixel_share"] is None else f"{r['pixel_share']:.2f}",
                            "s per page": f"{r['s_per_page']:.2f}"} for r in result["rows"]]))
    if out:
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")


def merge(files: list[str]) -> dict[str, Any]:
    """Rows run as separate processes (one row per core), joined in ``ROWS`` order; they must share a machine,
    thread count and budget."""
    parts = [json.loads(Path(f).read_text()) for f in files]
    for key in ("cpu", "threads", "budget_min"):
        if len({str(p[key]) for p in parts}) > 1:
            raise SystemExit(f"cannot merge: the files differ in {key}")
    rows = sorted((r for p in parts for r in p["rows"]), key=lambda r: ROWS.index(r["row"]))
    return parts[0] | {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", help="training pages (lightnets detect synth --preset kuzushiji)")
    parser.add_argument("--val", help="held-out pages (another seed), at least 30")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"rows to run, of {', '.join(ROWS)}")
    parser.add_argument("--budget-min", type=float, default=30.0, help="CPU minutes of training per row")
    parser.add_argument("--weak-share", type=float, default=0.25, help="chips_neg: the weak detector's share")
    parser.add_argument("--backbone", default="mobilenetv3_large_100")
    parser.add_argument("--top-k", type=int, default=500, help="detections per page (per tile with tiles)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the detection recipe's")
    parser.add_argument("--monitor-pages", type=int, default=2, help="held-out pages evaluated after each epoch")
    parser.add_argument("--runs", default="runs/large_pages", help="folder for the rows' runs")
    parser.add_argument("--reuse", action="store_true",
                        help="keep rows already trained (or measured: row.json) in --runs instead of training again")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="join these outputs of separate processes instead of training")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.merge:
        report(merge(args.merge), args.out)
        return
    if not (args.train and args.val):
        parser.error("give --train and --val pages (or --merge)")
    chips = ChipConfig(scales=PAGE_SCALES, ranges=PAGE_RANGES)
    out = Path(args.runs)
    rows = []
    for row in args.rows.split(","):
        if row not in ROWS:
            parser.error(f"unknown row {row!r}; rows: {', '.join(ROWS)}")
        saved = out / row / "row.json"
        if args.reuse and saved.is_file():
            rows.append(json.loads(saved.read_text()))
            continue
        run = out / row if args.reuse and trained(out / row) else train_row(row, args, out, chips)
        config = json.loads((run / "config.json").read_text())
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        is_chips = row.startswith("chips")
        metrics = evaluate_detector(run / "last", args.val, top_k=args.top_k, tiles="auto" if is_chips else None)
        if is_chips:
            stats = config["chip_stats"]
            pixels = (stats["positive_chips"] + stats["negative_chips_per_epoch"]) * chips.size ** 2
        else:
            pixels = config["train_images"] * config["input_size"] ** 2
        rows.append({"row": row, "run": str(run), "cpu_min": round(history[-1]["budget_s"] / 60, 1),
                     "epochs": history[-1]["epoch"], "f1": metrics["f1"], "map50": metrics.get("map50"),
                     "map": metrics.get("map"), "pixels_per_epoch": pixels,
                     "pixel_share": config.get("chip_stats", {}).get("pixel_share"),
                     "s_per_page": seconds_per_page(run, args.val, is_chips, args.top_k)})
        saved.write_text(json.dumps(rows[-1], indent=1) + "\n")
    report({"cpu": cpu_info().describe(), "threads": args.threads, "budget_min": args.budget_min, "rows": rows},
           args.out)


if __name__ == "__main__":
    main()
