"""lightnets against timm on the same architectures, side by side in one process.

Run it with the peers environment (timm and torchvision beside a CPU torch; see docs/BENCHMARKS.md):

    .peers/bin/python benchmarks/peers.py --threads 2 --out docs/peers.json

For every architecture it times, interleaved so that every candidate sees the same load: timm's
eager model (the baseline), ours in eager mode, and ours on the deploy path (BN folded, exported to
ONNX, run by each installed runtime). It prints the ratios to timm's eager latency, our deploy
path's agreement with our eager predictions on a test batch, and the achieved GFLOP/s against the
machine's fp32 matmul peak measured in the same run (the faster of torch.mm and ONNX Runtime's
MatMul). Weights are random: only speed is compared. Where OpenVINO can compute in bf16 on this CPU, the
bf16 path is timed too, in its own columns: it is not the fp32 deploy path.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightnets import count, list_models  # noqa: E402
from lightnets.bench import matmul_peak_gflops, thread_count, time_interleaved  # noqa: E402
from lightnets.bench.backends import make_runner, to_numpy  # noqa: E402
from lightnets.deploy import export_onnx, load_for_deploy, runtime_missing, top1_agreement  # noqa: E402
from lightnets.report import format_markdown, format_table  # noqa: E402

# (ours, timm's): timm's vovnet39a/57a are the original OSA networks without eSE, as ours are.
PAIRS = [
    ("mobilenetv1_100", "mobilenetv1_100"),
    ("mobilenetv3_large_100", "mobilenetv3_large_100"),
    ("mobilenetv3_small_100", "mobilenetv3_small_100"),
    ("efficientnet_b0", "efficientnet_b0"),
    ("densenet121", "densenet121"),
    ("vovnet39", "vovnet39a"),
    ("vovnet57", "vovnet57a"),
]
RUNTIMES = [r for r in ("onnxruntime", "openvino") if importlib.util.find_spec(r)]  # fp32: the deploy path
LOW_PRECISION = [r for r in ("openvino_bf16",) if runtime_missing(r) is None]


def import_timm():
    """timm, or None. A CUDA torchvision wheel beside a CPU torch lacks two operator schemas that its
    import registers kernels for; defining the schemas is enough, the models need none of those ops."""
    if importlib.util.find_spec("timm") is None:
        return None
    if not hasattr(torch.ops.torchvision, "nms"):
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_timm.keep = lib  # the schemas live as long as the library object
    import timm

    return timm


def measure(ours_name: str, timm_name: str, timm, size: int, min_time: float, rounds: int, threads: int,
            tmp: Path) -> dict:
    ours, info = load_for_deploy(ours_name)
    peer = timm.create_model(timm_name).eval()
    x = torch.randn(1, 3, size, size)
    test = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(0))
    onnx_path = export_onnx(ours, tmp / f"{ours_name}.onnx", info, dynamic_batch=True).path
    runners = {"timm eager": make_runner("eager", peer), "ours eager": make_runner("eager", ours),
               "ours channels_last": make_runner("channels_last", ours)}
    runners |= {f"ours {r}": make_runner(r, ours, onnx_path, threads) for r in RUNTIMES + LOW_PRECISION}
    reference = to_numpy(runners["ours eager"](test)())
    outputs = {n: to_numpy(r(test)()) for n, r in runners.items() if n != "timm eager"}
    agree = {n: top1_agreement(out, reference) for n, out in outputs.items()}
    # relative to the largest logit: random weights give logits from 1e-20 to 1e7 depending on the network
    max_diff = {n: float(np.abs(out - reference).max() / np.abs(reference).max()) for n, out in outputs.items()}
    timed = time_interleaved({n: r(x) for n, r in runners.items()}, "timm eager", min_time, rounds)
    macs = count(ours, size).macs
    deploy = min(RUNTIMES, key=lambda r: timed.ratios[f"ours {r}"]) if RUNTIMES else None
    return {
        "ours": ours_name, "timm": timm_name, "macs": macs,
        "params": sum(p.numel() for p in ours.parameters()),
        "timm_params": sum(p.numel() for p in peer.parameters()),
        "ms": {n: t.median_ms for n, t in timed.timings.items()},
        "ratio": timed.ratios, "agree": agree, "max_logit_diff": max_diff, "deploy": deploy,
    }


def rows(results: list[dict], peak: float) -> list[dict[str, str]]:
    out = []
    for r in results:
        ms, ratio = r["ms"], r["ratio"]
        deploy = r["deploy"]
        row = {
            "model": r["ours"],
            "timm": r["timm"],
            "params M (ours/timm)": f"{r['params'] / 1e6:.2f}/{r['timm_params'] / 1e6:.2f}",
            "GMACs": f"{r['macs'] / 1e9:.3f}",
            "timm eager ms": f"{ms['timm eager']:.1f}",
            "ours eager ms": f"{ms['ours eager']:.1f}",
            "eager / timm": f"{ratio['ours eager']:.2f}",
            "channels_last / timm": f"{ratio['ours channels_last']:.2f}",
        }
        for rt in RUNTIMES:
            row[f"{rt} / timm"] = f"{ratio[f'ours {rt}']:.2f}"
        if deploy:
            best = ms[f"ours {deploy}"]
            row["deploy"] = deploy
            row["deploy agree"] = f"{100 * r['agree'][f'ours {deploy}']:.0f}%"
            row["deploy GFLOP/s"] = f"{2 * r['macs'] / best / 1e6:.0f}"
            row["deploy % of peak"] = f"{100 * 2 * r['macs'] / best / 1e6 / peak:.0f}%"
        for rt in LOW_PRECISION:
            row[f"{rt} / timm"] = f"{ratio[f'ours {rt}']:.2f}"
            row[f"{rt} agree"] = f"{100 * r['agree'][f'ours {rt}']:.0f}%"
            row[f"{rt} max logit diff / max logit"] = f"{r['max_logit_diff'][f'ours {rt}']:.1e}"
        row["eager GFLOP/s"] = f"{2 * r['macs'] / ms['ours eager'] / 1e6:.0f}"
        row["eager % of peak"] = f"{100 * 2 * r['macs'] / ms['ours eager'] / 1e6 / peak:.0f}%"
        out.append(row)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(p[0] for p in PAIRS), help="comma-separated lightnets names")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds per candidate")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds the seconds are split into")
    parser.add_argument("--out", default=None, help="write the raw figures as JSON")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    timm = import_timm()
    if timm is None:
        print("timm is not importable here: run with the peers environment (.peers/bin/python); nothing measured")
        return 0
    wanted = args.models.split(",")
    pairs = [p for p in PAIRS if p[0] in wanted and p[0] in list_models()]
    skipped = [n for n in wanted if n not in dict(pairs)]
    results = []
    with thread_count(args.threads), tempfile.TemporaryDirectory() as tmp:
        peaks = matmul_peak_gflops(args.threads)
        for ours_name, timm_name in pairs:
            print(f"measuring {ours_name} against timm {timm_name}", file=sys.stderr)
            results.append(measure(ours_name, timm_name, timm, args.input_size, args.min_time, args.rounds,
                                   args.threads, Path(tmp)))
        peaks = {lib: max(rate, peaks[lib]) for lib, rate in matmul_peak_gflops(args.threads).items()}
    peak = max(peaks.values())
    table = rows(results, peak)
    print(f"torch {torch.__version__}, timm {timm.__version__}, {args.threads} threads, input {args.input_size}, "
          f"batch 1, medians of {args.min_time:g} s per candidate in {args.rounds} interleaved rounds; "
          "fp32 matmul peak (2048x2048, best of two in this run): "
          + ", ".join(f"{lib} {rate:.0f} GFLOP/s" for lib, rate in peaks.items()))
    if skipped:
        print(f"not measured (not registered in lightnets or no timm pair): {', '.join(skipped)}")
    print(format_markdown(table) if args.markdown else format_table(table))
    if args.out:
        Path(args.out).write_text(json.dumps({"torch": torch.__version__, "timm": timm.__version__,
                                              "threads": args.threads, "matmul_gflops": peaks, "results": results},
                                             indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
