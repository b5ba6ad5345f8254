"""Test accuracy of several checkpoints on the same images, each compared image by image with the first.

On a 1,000-image test set one model's top-1 has a standard error of about 1 point, too coarse to see a
one-point gain by itself. Two models scored on the same images differ only where one is right and the other
wrong, so the comparison here is McNemar's exact test on those discordant images: ``gained`` (right here,
wrong in the reference), ``lost`` (the reverse) and the two-sided p-value of a split at least that uneven if
neither model were better. Each checkpoint is evaluated in fp32 with its own normalisation, optionally
averaging the logits of each image and its mirror (``--tta``, as the ``fast`` recipe's evaluation does).
``--latency`` also times the checkpoints' networks at batch 1 (eager, eval mode, their own input size), side
by side in alternating bursts so a change of load falls on all of them alike, and gives each one's median
and its ratio to the first's (NetAdapt's result against its source and a uniformly scaled network).
``--runtimes`` adds each checkpoint exported to ONNX (fp32, batch norm folded) and run by those runtimes, so
a deployment's predictions are compared image by image with PyTorch's ("same top-1" and the largest logit
difference, against the first row).

    python benchmarks/paired_accuracy.py --data /work/shared/datasets/cifar10-png.tar.gz --tta \\
        runs/distill-base runs/distill-kd runs/distill-base-time
    python benchmarks/paired_accuracy.py --data /work/shared/datasets/cifar10-png.tar.gz --tta --latency \\
        --threads 1 runs/netadapt-source runs/netadapt/adapted.safetensors runs/netadapt-uniform
    python benchmarks/paired_accuracy.py --data /work/shared/datasets/cifar10-images.tar.gz \
        --runtimes openvino,openvino_bf16 runs/jpeg-teacher
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightnets.bench import thread_count  # noqa: E402
from lightnets.data import Split, load_data  # noqa: E402
from lightnets.deploy import OnnxClassifier, export_onnx, load_for_deploy  # noqa: E402
from lightnets.report import format_markdown, format_table  # noqa: E402
from lightnets.search import measure_side_by_side  # noqa: E402
from lightnets.train import load_model  # noqa: E402
from lightnets.train.classify import split_logits  # noqa: E402


def mcnemar_p(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: the chance of a split of the discordant images at least this uneven
    under a fair coin (doubled one-sided binomial tail, capped at 1)."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


def test_logits(checkpoint: str, data: str, tta: bool, runtimes: list[str]
                ) -> tuple[dict[str | None, torch.Tensor], torch.Tensor]:
    """The checkpoint's logits on every test image, by PyTorch (key None) and by each of ``runtimes`` (the
    checkpoint exported to ONNX once), and the labels mapped onto the checkpoint's class order. The checkpoint
    and the data are loaded once for all of them."""
    model, info = load_for_deploy(checkpoint)
    meta = model.checkpoint_meta
    dataset = load_data(data, meta["image_size"], seed=meta["recipe"]["seed"])
    remap = torch.tensor([meta["classes"].index(c) for c in dataset.classes])
    split = Split(dataset.test.images, remap[dataset.test.labels])
    splits = [split, Split(split.images.flip(-1), split.labels)] if tta else [split]
    logits: dict[str | None, torch.Tensor] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", info, dynamic_batch=True).path if runtimes else None
        for runtime in [None, *runtimes]:
            scorer = model if runtime is None else OnnxClassifier(path, runtime)
            logits[runtime] = sum(split_logits(scorer, s, meta["mean"], meta["std"]) for s in splits)
    return logits, split.labels


def batch1_latency(checkpoints: list[str], threads: int, min_time: float) -> dict[str, float]:
    """Median batch-1 milliseconds of each checkpoint's network, timed side by side."""
    models = {c: load_model(c) for c in checkpoints}
    shapes = {c: (1, 3, m.checkpoint_meta["image_size"], m.checkpoint_meta["image_size"]) for c, m in models.items()}
    with thread_count(threads):
        timings = measure_side_by_side({c: (lambda m=m: m) for c, m in models.items()}, shapes, min_time=min_time)
    return {c: t.median_ms for c, t in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="run folders or checkpoints; the first is the reference")
    parser.add_argument("--data", required=True)
    parser.add_argument("--tta", action="store_true", help="average each image's and its mirror's logits")
    parser.add_argument("--latency", action="store_true", help="also time the networks at batch 1, side by side")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for the timing (default 1)")
    parser.add_argument("--min-time", type=float, default=5.0, help="seconds of timed runs per network")
    parser.add_argument("--runtimes", default="", help="comma-separated ONNX runtimes to run each checkpoint "
                        "on too, e.g. openvino,openvino_bf16")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    runtimes = [r for r in args.runtimes.split(",") if r]
    scored = {c: test_logits(c, args.data, args.tta, runtimes) for c in args.checkpoints}
    latency = batch1_latency(args.checkpoints, args.threads, args.min_time) if args.latency else {}
    first, labels = scored[args.checkpoints[0]]
    reference_logits = first[None]
    reference = reference_logits.argmax(1) == labels
    rows = []
    runs = [(c, None) for c in args.checkpoints] + [(c, r) for c in args.checkpoints for r in runtimes]
    for name, runtime in runs:
        logits = scored[name][0][runtime]
        right = logits.argmax(1) == labels
        gained, lost = int((right & ~reference).sum()), int((~right & reference).sum())
        rows.append({"checkpoint": name, "run by": runtime or "torch", "top-1 %": f"{100 * right.double().mean():.2f}",
                     "images": str(len(right)), "gained": str(gained), "lost": str(lost),
                     "difference (points)": f"{100 * (gained - lost) / len(right):+.2f}",
                     "McNemar p": f"{mcnemar_p(gained, lost):.3g}"})
        if args.runtimes:
            same = (logits.argmax(1) == reference_logits.argmax(1)).double().mean()
            rows[-1] |= {"same top-1 as first %": f"{100 * same:.2f}",
                         "max logit difference": f"{(logits - reference_logits).abs().max():.2g}"}
        if latency:  # the eager networks only
            ms = latency[name] if runtime is None else None
            rows[-1] |= {"batch-1 ms": "-" if ms is None else f"{ms:.3f}",
                         "x first": "-" if ms is None else f"{ms / latency[args.checkpoints[0]]:.3f}"}
    print(format_markdown(rows) if args.markdown else format_table(rows))


if __name__ == "__main__":
    main()
