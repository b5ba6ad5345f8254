"""Training throughput (images/s of a full step) and the data pipeline's share of step time, per model.

Runs the real pipeline: uint8 CIFAR-10 held as a tensor, on-device crop+flip augmentation and
normalisation (``ImageBatches``), cross-entropy, backward and the optimizer step, all through
``lightnets.train.fit`` with a time budget. The loop times how long each batch takes to arrive
(``data_share``); the rest of the step is the model's. ``img/s`` is on the CPU clock (process CPU time
per thread), so other work on a shared machine does not lower it; ``wall img/s`` is what the wall
clock saw.

    python benchmarks/train_throughput.py --data /work/shared/datasets/cifar10-png.tar.gz --threads 2
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from lightnets import create_model, load_data
from lightnets.data import Augment, ImageBatches
from lightnets.report import format_markdown, format_table
from lightnets.train import ClassificationTask, LoopConfig, fit, get_recipe, make_optimizer, make_schedule

MODELS = ["vovnet27_slim_cifar", "peleenet_cifar", "densenet_k16_3_6_12_8_cifar", "mobilenetv1_100_cifar",
          "mobilenetv3_large_100_cifar", "efficientnet_b0_cifar"]


def measure(name: str, data, batch_size: int, amp: str | None, seconds: float, warmup: float) -> dict[str, str]:
    mean, std = data.mean_std()
    model = create_model(name, num_classes=len(data.classes)).to(memory_format=torch.channels_last)
    recipe = get_recipe("fast", batch_size=batch_size, amp=amp)
    batches = ImageBatches(data.train, batch_size, mean, std, augment=Augment())
    optimizer = make_optimizer(model, recipe)
    record = {}
    with tempfile.TemporaryDirectory() as tmp:
        for budget in (warmup, seconds):  # the first pass warms up oneDNN's kernels
            config = LoopConfig(epochs=1, amp=amp, time_budget=budget, progress=False)
            record = fit(model, ClassificationTask(0.1), batches, optimizer, make_schedule(recipe), config, tmp)[-1]
    # The CPU clock (process CPU time per thread) is what an unshared machine would have taken.
    cpu_rate = record["step"] * batch_size / record["budget_s"]
    step_s = batch_size / cpu_rate
    return {"model": name, "batch": str(batch_size), "precision": amp or "fp32",
            "img/s": f"{cpu_rate:.0f}", "step ms": f"{1000 * step_s:.0f}",
            "data ms": f"{1000 * step_s * record['data_share']:.1f}",
            "data share %": f"{100 * record['data_share']:.1f}",
            "epoch s (50k)": f"{50_000 / cpu_rate:.0f}",
            "wall img/s": f"{record['train_img_s']:.0f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="sample", help="data source (default: the built-in sample)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--amp", choices=["bf16", "none"], default="bf16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured training time per model")
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data(args.data, 32)
    rows = []
    for name in args.models.split(","):
        rows.append(measure(name, data, args.batch_size, None if args.amp == "none" else args.amp, args.seconds,
                            args.warmup))
        print(format_table(rows[-1:]), flush=True)
    print(f"\n{torch.__version__}, {args.threads} threads, data {args.data}\n")
    print(format_markdown(rows) if args.markdown else format_table(rows))


if __name__ == "__main__":
    main()
