"""Where eager batch-1 time goes: each model's time split into depthwise convs, dense convs, and the rest.

    python benchmarks/bench_profile.py --threads 2 --models mobilenetv3_large_100,densenet121

The split explains the gap between a model's achieved GFLOP/s and the machine's matmul peak:
depthwise convolutions do few MACs per byte moved, and element-wise work (activations, SE gates,
batch norm, concatenation) does none that count, yet both take time.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightnets import count, create_model  # noqa: E402
from lightnets.bench import thread_count  # noqa: E402
from lightnets.report import format_markdown, format_table  # noqa: E402

CONV_OPS = {"aten::mkldnn_convolution", "aten::_convolution", "aten::thnn_conv2d", "aten::_slow_conv2d_forward",
            "aten::_nnpack_spatial_convolution", "aten::convolution_overrideable"}


def split(model: torch.nn.Module, size: int, memory_format: torch.memory_format, runs: int) -> dict[str, float]:
    """Milliseconds per forward pass by kind of work, from the profiler's self CPU time of each op."""
    x = torch.randn(1, 3, size, size).contiguous(memory_format=memory_format)
    model = model.to(memory_format=memory_format)
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(runs):
                model(x)
    kinds: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.name in CONV_OPS:
            weight = event.input_shapes[1] if len(event.input_shapes) > 1 else []
            depthwise = len(weight) == 4 and weight[1] == 1 and event.input_shapes[0][1] > 1
            kind = "depthwise conv" if depthwise else "dense conv"
        elif event.name.startswith("aten::") and event.name not in ("aten::convolution", "aten::conv2d"):
            kind = "cat" if event.name == "aten::cat" else "other ops"
        else:
            continue
        kinds[kind] += event.self_cpu_time_total / 1000 / runs
    return dict(kinds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenetv1_100,mobilenetv3_large_100,mobilenetv3_small_100,"
                        "efficientnet_b0,densenet121,vovnet39")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    rows = []
    with thread_count(args.threads):
        for name in args.models.split(","):
            model = create_model(name).eval()
            macs = count(model, args.input_size).macs
            for label, fmt in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
                kinds = split(model, args.input_size, fmt, args.runs)
                total = sum(kinds.values())
                row = {"model": name, "layout": label, "profiled ms": f"{total:.1f}",
                       "GFLOP/s": f"{2 * macs / total / 1e6:.0f}"}
                row |= {k: f"{100 * kinds.get(k, 0.0) / total:.0f}%" for k in
                        ("dense conv", "depthwise conv", "cat", "other ops")}
                rows.append(row)
    print(f"torch {torch.__version__}, {args.threads} threads, batch 1, {args.input_size}x{args.input_size}, "
          f"profiler self CPU time (profiling adds overhead; shares matter, not totals)")
    print(format_markdown(rows) if args.markdown else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
