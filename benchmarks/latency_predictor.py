"""How well the latency table predicts whole networks: predicted (sum of table entries) against measured
batch-1 latency for random members of a search space, with the mean absolute percentage error, Spearman's
rank correlation (targets: MAPE <= 10%, rank correlation >= 0.9) and a scatter plot.

The networks are timed whole with the benchmark protocol (batch 1, eval, torch.inference_mode, median of
``--min-time`` seconds each), side by side in alternating bursts so a change of load falls on all of them
alike: once before and once after the table entries they need are measured (entries already in the table
file are reused), and their latency is the mean of the two passes. The drift between the passes is
printed: where it is more than a few percent the machine changed speed while the table was measured, and
the MAPE says more about the machine than about the predictor. Run it on a quiet machine:

    python benchmarks/latency_predictor.py --space mobilenetv3_cifar --archs 24 --threads 1 \\
        --plot docs/latency_predictor_cifar.png --markdown
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightnets import count, create_model  # noqa: E402
from lightnets._plot import headless_pyplot  # noqa: E402
from lightnets.bench import thread_count  # noqa: E402
from lightnets.report import format_markdown, format_table  # noqa: E402
from lightnets.search import (  # noqa: E402
    build_latency_table,
    default_table_path,
    device_description,
    get_space,
    measure_side_by_side,
    network_layers,
    spearman,
)


def plot(predicted: list[float], measured: list[float], path: Path, title: str) -> None:
    plt = headless_pyplot()
    if plt is None:
        print("matplotlib is not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(measured, predicted, s=18)
    lo, hi = min(predicted + measured) * 0.9, max(predicted + measured) * 1.1
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="predicted = measured")
    ax.fill_between([lo, hi], [0.9 * lo, 0.9 * hi], [1.1 * lo, 1.1 * hi], color="grey", alpha=0.15, label="±10%")
    ax.set_xlabel("measured batch-1 latency, ms (median)")
    ax.set_ylabel("predicted latency, ms (sum of table entries)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="mobilenetv3_cifar")
    parser.add_argument("--input-size", type=int, default=None, help="default: the space's")
    parser.add_argument("--archs", type=int, default=24, help="random members to compare (at least 20 for a result)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds of timed runs per entry and network")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--table", default=None, help="table file (default: the one `lightnets latency-table` uses)")
    parser.add_argument("--plot", default=None, help="scatter plot png")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    space = get_space(args.space)
    size = args.input_size or space.input_size
    rng = random.Random(args.seed)
    archs = [space.sample(rng) for _ in range(args.archs)]
    table_path = Path(args.table or default_table_path(space, size, args.device, args.threads, args.clock))
    load_before = os.getloadavg()
    start = time.time()
    models = {str(i): create_model(space.model, arch=arch) for i, arch in enumerate(archs)}
    builds = {name: (lambda m=m: m) for name, m in models.items()}
    shape = (1, 3, size, size)

    def networks() -> dict[str, float]:
        with thread_count(args.threads):
            timings = measure_side_by_side(builds, shape, args.device, args.min_time, args.clock)
        return {name: t.median_ms for name, t in timings.items()}

    before = networks()
    table = build_latency_table(network_layers(archs, size, space.num_classes), table_path, device=args.device,
                                threads=args.threads, min_time=args.min_time, clock=args.clock,
                                log=lambda msg: print(msg, file=sys.stderr))
    after = networks()
    drift = statistics.median(after[n] / before[n] for n in models)
    rows, predicted, measured = [], [], []
    for (name, model), arch in zip(models.items(), archs, strict=True):
        predicted.append(table.predict(arch, size, space.num_classes))
        measured.append((before[name] + after[name]) / 2)
        rows.append({"#": name, "width": f"{arch.width_mult:g}", "depths": "-".join(str(s.layers) for s in arch.stages),
                     "MACs M": f"{count(model, size).macs / 1e6:.1f}", "predicted ms": f"{predicted[-1]:.3f}",
                     "measured ms": f"{measured[-1]:.3f}", "pass 2 / pass 1": f"{after[name] / before[name]:.2f}",
                     "error %": f"{100 * (predicted[-1] - measured[-1]) / measured[-1]:+.1f}"})
    mape = 100 * sum(abs(p - m) / m for p, m in zip(predicted, measured, strict=True)) / len(archs)
    rho = spearman(predicted, measured)
    print(format_markdown(rows) if args.markdown else format_table(rows))
    d = device_description(args.device, args.threads, args.clock)
    summary = (f"{args.space} at {size}x{size}, {len(archs)} random members (seed {args.seed}): MAPE {mape:.1f}% "
               f"(target <= 10%), Spearman {rho:.3f} (target >= 0.9); {d['name']}, {d['threads']} thread(s), "
               f"{d['clock']} clock, torch {d['torch']}, min-time {args.min_time}s; networks' drift between passes "
               f"{100 * (drift - 1):+.1f}% (median); load average "
               f"{load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end; {time.time() - start:.0f}s; "
               f"table {table_path}")
    print("\n" + summary)
    if args.plot:
        plot(predicted, measured, Path(args.plot), f"MAPE {mape:.1f}%, Spearman {rho:.3f}\n{args.space}, "
             f"{d['threads']} thread(s), {d['clock']} clock")


if __name__ == "__main__":
    main()
