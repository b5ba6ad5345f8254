"""CIFAR-10 test accuracy at a fixed CPU budget, one training run per model, and the table for docs/TRAINING.md.

Each model trains with the ``fast`` recipe for ``--budget-min`` minutes of CPU time per thread (other
work on the machine stretches the wall time, not the budget), then the table reads the run folders.

    python benchmarks/train_accuracy.py --models vovnet27_slim_cifar --budget-min 35 --threads 1 \\
        --data /work/shared/datasets/cifar10-png.tar.gz --out runs/cifar-budget

``--runs DIR,DIR`` only tabulates run folders made by hand (``lightnets train ... --out DIR``), for instance
fine-tuning from pretrained weights beside training from scratch; their rows say how each run started.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lightnets import count_params, create_model, train
from lightnets.report import format_markdown, format_table


def row(run_dir: Path) -> dict[str, str]:
    """One table row from a finished run folder (so runs launched by hand are reported the same way)."""
    config = json.loads((run_dir / "config.json").read_text())
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = history[-1]
    params = count_params(create_model(config["model"], num_classes=len(config["classes"])))
    recipe = config["recipe"]
    return {
        "model": config["model"],
        "start": config.get("pretrained") or "random init",
        "input": str(config["image_size"]),
        "lr": f"{recipe['lr']:g}",
        "batch": str(recipe["batch_size"]),
        "precision": recipe["amp"] or "fp32",
        "frozen stages": str(recipe.get("freeze", 0)),
        "params M": f"{params / 1e6:.2f}",
        "budget min": f"{config['recipe']['budget_min'] or '-'}",
        "threads": str(config["threads"]),
        "epochs": f"{last['step'] / (config['train_images'] // config['recipe']['batch_size']):.1f}",
        "test top-1 %": f"{last['val_top1']:.2f}",
        "test images": str(config["test_images"]),
        "train wall min": f"{last['elapsed_s'] / 60:.1f}",
        "CPU share %": f"{100 * last['budget_s'] / last['elapsed_s']:.0f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vovnet27_slim_cifar")
    parser.add_argument("--data", default="/work/shared/datasets/cifar10-png.tar.gz")
    parser.add_argument("--budget-min", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: measured, as train's)")
    parser.add_argument("--out", default="runs/cifar-budget", help="run folders go to OUT-MODEL")
    parser.add_argument("--report-only", action="store_true", help="only read existing run folders")
    parser.add_argument("--runs", default=None, metavar="DIR[,DIR...]", help="only tabulate these run folders")
    args = parser.parse_args()
    if args.runs:
        print(format_markdown([row(Path(d)) for d in args.runs.split(",")]))
        return
    rows = []
    for name in args.models.split(","):
        run_dir = Path(f"{args.out}-{name}")
        if not args.report_only:
            train(name, args.data, "fast", budget_min=args.budget_min, out=run_dir, progress=False,
                  threads=args.threads)
        rows.append(row(run_dir))
        print(format_table(rows[-1:]), flush=True)
    print(format_markdown(rows))


if __name__ == "__main__":
    main()
