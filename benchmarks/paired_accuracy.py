"""Test accuracy of several checkpoints on the same images, each compared image by image with the first.

On a 1,000-image test set one model's top-1 has a standard error of about 1 point, too coarse to see a
one-point gain by itself. Two models scored on the same images differ only where one is right and the other
wrong, so the comparison here is McNemar's exact test on those discordant images: ``gained`` (right here,
wrong in the reference), ``lost`` (the reverse) and the two-sided p-value of a split at least that uneven if
neither model were better. Each checkpoint is evaluated in fp32 with its own normalisation, optionally
averaging the logits of each image and its mirror (``--tta``, as the ``fast`` recipe's evaluation does).

    python benchmarks/paired_accuracy.py --data /work/shared/datasets/cifar10-png.tar.gz --tta \\
        runs/distill-base runs/distill-kd runs/distill-base-time
"""

from __future__ import annotations

import argparse
import math

import torch

from lightnets.data import Split, load_data
from lightnets.report import format_markdown, format_table
from lightnets.train import load_model
from lightnets.train.classify import split_logits


def mcnemar_p(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: the chance of a split of the discordant images at least this uneven
    under a fair coin (doubled one-sided binomial tail, capped at 1)."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


def correct(checkpoint: str, data: str, tta: bool) -> torch.Tensor:
    """Per test image: is the checkpoint's top-1 right (labels mapped onto the checkpoint's class order)."""
    model = load_model(checkpoint)
    meta = model.checkpoint_meta
    dataset = load_data(data, meta["image_size"], seed=meta["recipe"]["seed"])
    remap = torch.tensor([meta["classes"].index(c) for c in dataset.classes])
    split = Split(dataset.test.images, remap[dataset.test.labels])
    logits = split_logits(model, split, meta["mean"], meta["std"])
    if tta:
        logits = logits + split_logits(model, Split(split.images.flip(-1), split.labels), meta["mean"], meta["std"])
    return logits.argmax(1) == split.labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="run folders or checkpoints; the first is the reference")
    parser.add_argument("--data", required=True)
    parser.add_argument("--tta", action="store_true", help="average each image's and its mirror's logits")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    results = [correct(c, args.data, args.tta) for c in args.checkpoints]
    reference = results[0]
    rows = []
    for name, right in zip(args.checkpoints, results, strict=True):
        gained, lost = int((right & ~reference).sum()), int((~right & reference).sum())
        rows.append({"checkpoint": name, "top-1 %": f"{100 * right.double().mean():.2f}", "images": str(len(right)),
                     "gained": str(gained), "lost": str(lost),
                     "difference (points)": f"{100 * (gained - lost) / len(right):+.2f}",
                     "McNemar p": f"{mcnemar_p(gained, lost):.3g}"})
    print(format_markdown(rows) if args.markdown else format_table(rows))


if __name__ == "__main__":
    main()
