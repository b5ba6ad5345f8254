"""Training speed of every precision x layout x thread count, and what ``auto`` picks, per model on this machine.

For each model: the training step (forward, backward, SGD) at the run's batch (256, the ``fast`` recipe's) for
every candidate, measured side by side (one warm-up step each, then rounds of one step each in rotating order,
medians); then the probe that ``lightnets train`` runs (``probe_speed``, no cache), its choice, its time, and
the choice's rate in the table as a share of the best candidate's. Writes json and prints a markdown table.

    python benchmarks/precision_layout.py --out docs/precision_layout.json

Fine-tuning with frozen stages adds the candidate that computes only those stages in bf16 (``bf16-frozen``):

    python benchmarks/precision_layout.py --models efficientnet_lite0 --num-classes 10 --input-size 160 \
        --freeze 4 --batch 128 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightnets import create_model  # noqa: E402
from lightnets.bench.machine import cpu_info, usable_cores  # noqa: E402
from lightnets.bench.probe import Candidate, candidate_rates, probe_speed, thread_options  # noqa: E402
from lightnets.models.base import FROZEN_BF16  # noqa: E402

MODELS = ("vovnet27_slim_cifar", "peleenet_cifar", "densenet_k16_3_6_12_8_cifar", "mobilenetv1_100_cifar",
          "mobilenetv3_large_100_cifar", "efficientnet_b0_cifar")


def measure(model: str, batch: int, rounds: int, size: int, freeze: int, threads: int | None,
            num_classes: int | None) -> dict:
    net = create_model(model, **({"num_classes": num_classes} if num_classes else {}))
    net.freeze_stages(freeze)
    precisions = (None, "bf16", FROZEN_BF16) if freeze else (None, "bf16")
    thread_counts = [threads] if threads else thread_options(usable_cores())
    candidates = [Candidate(p, layout, t) for t in thread_counts for p in precisions for layout in (True, False)]
    rates = candidate_rates(net, (3, size, size), batch, candidates, "cpu", rounds)
    choice = probe_speed(net, (3, size, size), batch, "cpu", threads=threads)
    best = max(rates, key=rates.__getitem__)
    picked = rates[choice.candidate]
    return {"model": model, "batch": batch, "input": size, "freeze": freeze,
            "rates": {c.label(): r for c, r in rates.items()},
            "best": best.label(), "auto": choice.candidate.label(), "auto_share_of_best": picked / rates[best],
            "probe_s": choice.probe_s, "probe_batch": choice.probe_batch, "probe_line": choice.line()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--freeze", type=int, default=0, help="freeze the stem and this many stages first")
    parser.add_argument("--threads", type=int, default=None, help="only this thread count (default: each option)")
    parser.add_argument("--num-classes", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the figures to this json file")
    args = parser.parse_args()
    machine = {"cpu": cpu_info().describe(), "torch": torch.__version__}
    print(f"{machine['cpu']}, torch {machine['torch']}", file=sys.stderr)
    rows = []
    for model in args.models.split(","):
        rows.append(measure(model, args.batch, args.rounds, args.input_size, args.freeze, args.threads,
                            args.num_classes))
        print(rows[-1]["probe_line"], file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine, "results": rows}, indent=2))
    labels = list(rows[0]["rates"])
    print("| model | " + " | ".join(labels) + " | auto picked | auto / best | probe s |")
    print("|---" * (len(labels) + 4) + "|")
    for r in rows:
        cells = [f"**{r['rates'][k]:.0f}**" if k == r["best"] else f"{r['rates'][k]:.0f}" for k in labels]
        print(f"| {r['model']} | " + " | ".join(cells) +
              f" | {r['auto']} | {r['auto_share_of_best']:.3f} | {r['probe_s']:.1f} |")


if __name__ == "__main__":
    main()
