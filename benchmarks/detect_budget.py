"""CenterNet with and without stacked refinement at the same CPU budget on synthetic pages, and the table of it.

Training pages and held-out pages come from ``lightnets.detect.synthetic`` with different seeds. One detector
per ``--stacks`` value trains for ``--budget-min`` minutes of CPU time per thread (other work on the machine
stretches the wall time, not the budget) with the same seed, then mAP@0.5, mAP 0.5:0.95 and the Kuzushiji F1
on the held-out pages are read from the run folders (the last epoch's evaluation is the final model's). The task
is class-agnostic character localisation, the Kuzushiji setting: 512-pixel pages of 150-400 characters, 6-30
pixels wide, letterboxed to ``--input-size``.

    python benchmarks/detect_budget.py --backbone mobilenetv3_small_100 --stacks 1,2 --budget-min 30 --threads 1 \\
        --pages 400 --val-pages 50 --input-size 384 --batch-size 8 --epochs 15 --repeat 4 --out runs/detect-budget

``--pretrained TAG`` starts the backbone from those published weights (run folders end in ``-TAG``), so a
pretrained backbone and a random one can be compared at the same budget.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lightnets import count_params
from lightnets.detect import (
    DETECTION_RECIPE,
    DetectionAugment,
    coco_map_available,
    create_detector,
    synthetic_pages,
    train_detector,
)
from lightnets.report import format_markdown, format_table


def pages(root: Path, kind: str, count: int, size: int, char_sizes: tuple[int, int], seed: int) -> Path:
    """A folder of synthetic pages named after what is in it, written once and reused."""
    folder = root / f"{kind}-{count}p-{size}px-c{char_sizes[0]}_{char_sizes[1]}-s{seed}"
    if not (folder / "annotations.json").is_file():
        synthetic_pages(folder, count, size=(size, size), char_sizes=char_sizes, seed=seed)
    return folder


def row(run_dir: Path) -> dict[str, str]:
    """One table row from a finished run folder (so runs launched by hand are reported the same way)."""
    config = json.loads((run_dir / "config.json").read_text())
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = history[-1]
    recipe = config["recipe"]
    return {
        "backbone": config["backbone"],
        "backbone start": config.get("pretrained") or "random",
        "stacks": str(config["stacks"]),
        "params M": f"{count_params(create_detector(**config['detector'])) / 1e6:.2f}",
        "input": str(config["input_size"]),
        "budget min": f"{recipe['budget_min'] or '-'}",
        "used min": f"{last['budget_s'] / 60:.1f}",  # below the budget when the epochs ran out first
        "threads": str(config["threads"]),
        "train pages": str(config["train_images"]),
        "images seen": str(last["step"] * recipe["batch_size"]),
        "mAP@0.5": f"{last['val_map50']:.3f}",
        "mAP 0.5:0.95": f"{last['val_map']:.3f}",
        "F1": f"{last['val_f1']:.3f}",
        "precision": f"{last['val_precision']:.3f}",
        "recall": f"{last['val_recall']:.3f}",
        "held-out pages": str(config["val_images"]),
        "train wall min": f"{last['elapsed_s'] / 60:.1f}",
        "CPU share %": f"{100 * last['budget_s'] / last['elapsed_s']:.0f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="mobilenetv3_small_100")
    parser.add_argument("--stacks", default="1,2", help="comma-separated stack counts, one run each")
    parser.add_argument("--budget-min", type=float, default=30.0, help="CPU minutes per thread of training per run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pages", type=int, default=400, help="training pages (seed --seed)")
    parser.add_argument("--val-pages", type=int, default=50, help="held-out pages (seed --val-seed)")
    parser.add_argument("--page-size", type=int, default=512, help="square page side in pixels")
    parser.add_argument("--char-sizes", default="14,32", help="font sizes LOW,HIGH")
    parser.add_argument("--input-size", type=int, default=384)
    parser.add_argument("--epochs", type=int, default=15, help="at most this many epochs (each ends with an "
                        "evaluation); keep epochs x repeat x pages above what the budget can train on, so the budget "
                        "ends every run and the LR schedule follows the time")
    parser.add_argument("--repeat", type=int, default=4, help="passes over the pages per epoch")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=DETECTION_RECIPE.lr)
    parser.add_argument("--top-k", type=int, default=500, help="detections per page (default pages hold 150-400 "
                        "characters)")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="training pages and training")
    parser.add_argument("--val-seed", type=int, default=1, help="held-out pages")
    parser.add_argument("--out", default="runs/detect-budget", help="run folders go to OUT-BACKBONE-sN, pages to "
                        "OUT-pages/")
    parser.add_argument("--pretrained", default=None, metavar="TAG", help="start the backbone from these published "
                        "weights (`lightnets models --pretrained`)")
    parser.add_argument("--report-only", action="store_true", help="only read existing run folders")
    args = parser.parse_args()
    if not args.report_only and not coco_map_available():
        parser.error('mAP needs faster-coco-eval or pycocotools: pip install "lightnets[detect]"')
    char_sizes = tuple(int(v) for v in args.char_sizes.split(","))
    if not args.report_only:
        root = Path(f"{args.out}-pages")
        train_pages = pages(root, "train", args.pages, args.page_size, char_sizes, args.seed)
        held_out = pages(root, "heldout", args.val_pages, args.page_size, char_sizes, args.val_seed)
    rows = []
    for stacks in (int(s) for s in args.stacks.split(",")):
        run_dir = Path(f"{args.out}-{args.backbone}-s{stacks}" + (f"-{args.pretrained}" if args.pretrained else ""))
        if not args.report_only:
            train_detector(train_pages, args.backbone, val_data=held_out, class_agnostic=True,
                           input_size=args.input_size, stacks=stacks, recipe=DETECTION_RECIPE,
                           augment=None if args.no_augment else DetectionAugment(), repeat=args.repeat,
                           top_k=args.top_k, out=run_dir, progress=False, budget_min=args.budget_min,
                           threads=args.threads, pretrained=args.pretrained,
                           epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
        rows.append(row(run_dir))
        print(format_table(rows[-1:]), flush=True)
    print(format_markdown(rows))


if __name__ == "__main__":
    main()
