"""Measurement and deployment commands: benchmark, doctor and export."""

from __future__ import annotations

import argparse
import sys

from ..errors import LightnetsError
from ..report import format_table
from .options import add_pretrained_option, csv_of, positive_float, positive_int


def cmd_benchmark(args: argparse.Namespace) -> int:
    from ..bench import (
        plot_accuracy_latency,
        preset_models,
        result_rows,
        run_benchmark,
        source_rows,
        write_results,
    )

    models = (preset_models(args.preset) if args.preset else []) + (args.models or []) + args.checkpoint
    if not models:
        raise LightnetsError("give --models NAME,... (or checkpoints), --checkpoint PATH or --preset source")
    train = args.train_step or args.preset == "source"
    backends = args.backends
    if "auto" in backends:  # every backend that runs here, the fastest named at the end
        from ..bench import BACKENDS, backend_missing

        usable = [b for b in BACKENDS if b != "compile" and backend_missing(b, args.device) is None]
        at = backends.index("auto")
        backends = list(dict.fromkeys(backends[:at] + usable + backends[at + 1:]))
    results = run_benchmark(
        models, input_size=args.input_size, batch_sizes=args.batch_sizes, backends=backends,
        threads=args.threads, device=args.device, train=train, train_batch=args.train_batch,
        train_amp=None if args.train_amp == "none" else args.train_amp,
        min_time=args.min_time, log=lambda msg: print(msg, file=sys.stderr),
    )
    print(format_table(source_rows(results) if args.preset == "source" else result_rows(results)))
    if "auto" in args.backends:
        for model in dict.fromkeys(r.model for r in results):
            timed = [r for r in results if r.model == model and r.latency_ms is not None]
            if timed:
                best = min(timed, key=lambda r: r.latency_ms)
                print(f"fastest here for {model} at batch 1: {best.backend} ({best.latency_ms:.2f} ms)")
    for path in args.out:
        print(f"wrote {write_results(results, path)}")
    if args.plot:
        print(f"wrote {plot_accuracy_latency(results, args.plot)}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..bench.doctor import doctor, facts_text

    report = doctor(args.model, args.batch, measure=not args.no_measure)
    print(facts_text(report.facts))
    if report.training:
        print(f"\ntraining step, {report.model} at batch {args.batch} (random data), measured side by side:")
        print(format_table(report.training))
        print(f"\nbatch-1 inference, {report.model} (random weights), measured side by side:")
        print(format_table(report.deploy))
        print(f"\nmeasured in {report.seconds:.0f} s; `lightnets train` measures its own model the same way (--amp, "
              "--channels-last and --threads skip it)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    import torch

    from ..bench.compare import compare_int8
    from ..deploy import export_onnx, load_for_deploy, load_images

    model, info = load_for_deploy(args.model, args.pretrained)
    if args.input_size:
        info = dataclasses.replace(info, input_size=args.input_size)
    precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"
    suffix = "" if precision == "fp32" else f"_{precision}"
    output = Path(args.output or f"{info.model_name}{suffix}.onnx")
    check = torch.from_numpy(load_images(args.images, info, 64)[0]) if args.images else None
    calibration = load_images(args.calibration, info, args.calibration_limit)[0] if args.calibration else None
    result = export_onnx(model, output, info, opset=args.opset, dynamic_batch=args.dynamic_batch,
                         precision=precision, check_inputs=check, calibration=calibration, atol=args.atol)
    inputs = "given images" if args.images else "seeded random inputs"
    print(f"wrote {result.path} ({precision}, opset {result.opset}, {result.folded_bn} batch norms folded)")
    print(f"check against PyTorch on {inputs}: max |logit difference| {result.max_abs_diff:.2e}, "
          f"top-1 agreement {100 * result.top1_agreement:.1f}%")
    if precision == "int8":
        from ..bench.machine import cpu_info

        if not cpu_info().vnni:  # said before the comparison it explains, not before an argument error
            print(f"lightnets: warning: this CPU ({cpu_info().name}) has no VNNI (int8 dot-product) instructions: "
                  "int8 may run no faster than fp32 here; the comparison below measures it", file=sys.stderr)
        test_dir = args.test or args.images or args.calibration
        rows = compare_int8(model, info, result.path, test_dir, opset=args.opset, dynamic_batch=args.dynamic_batch,
                            limit=args.test_limit, threads=args.threads)
        print(f"\nfp32 against int8 on {test_dir} (ONNX Runtime, batch 1):\n{format_table(rows)}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from ..bench.backends import BACKENDS

    p = sub.add_parser("benchmark", help="latency, throughput and training speed per model and backend")
    p.add_argument("--models", type=csv_of(str, "model names or checkpoints"), default=None,
                   help="comma-separated model names or checkpoint files")
    p.add_argument("--checkpoint", action="append", default=[], help="a checkpoint whose accuracy joins the table")
    p.add_argument("--preset", choices=["source"], default=None,
                   help="'source': the source experiment's CIFAR table (train s/epoch, 10k test images at bs 1 and 32)")
    p.add_argument("--input-size", type=positive_int, default=None, help="input height and width (default: each "
                   "model's)")
    p.add_argument("--batch-sizes", type=csv_of(positive_int, "positive integers"), default=[1, 32],
                   help="batch 1 gives latency, larger ones throughput (default 1,32)")
    p.add_argument("--backends", type=csv_of(str, "backend names"), default=["eager"],
                   help=f"comma-separated, from {', '.join(BACKENDS)}, or auto: every one that runs here, the "
                        "fastest named (default eager)")
    p.add_argument("--threads", type=positive_int, default=None, help="intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--train-step", action="store_true", help="also time a training step (img/s, s per CIFAR epoch)")
    p.add_argument("--train-batch", type=positive_int, default=128, help="batch of the training step (default 128)")
    p.add_argument("--train-amp", choices=["auto", "bf16", "fp16", "none"], default="auto",
                   help="the training step's autocast (default auto: the faster here of fp32 and native bf16)")
    p.add_argument("--min-time", type=positive_float, default=2.0, help="seconds of timed runs per backend and "
                   "batch")
    p.add_argument("--out", action="append", default=[], help="write the results to FILE.json or FILE.csv")
    p.add_argument("--plot", default=None, help="draw accuracy against latency (needs checkpoints) to FILE.png")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("doctor", help="this machine: CPU flags, cores, versions, and what runs fastest (~30 s)")
    p.add_argument("--model", default="vovnet27_slim_cifar", help="the model to measure on (default a small one)")
    p.add_argument("--batch", type=positive_int, default=32, help="training batch of the measurement (default 32)")
    p.add_argument("--no-measure", action="store_true", help="the facts only, nothing timed")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("export", help="fold batch norm, export to ONNX, check it against PyTorch")
    p.add_argument("model", metavar="MODEL_OR_CHECKPOINT")
    add_pretrained_option(p, "a model name")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--output", "-o", default=None, help="the .onnx file (default: MODEL[_fp16|_int8].onnx)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, 18 or newer (default 18)")
    p.add_argument("--dynamic-batch", action="store_true", help="accept any batch size (default: batch 1)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="compute in half precision (fp32 inputs/outputs)")
    precision.add_argument("--int8", action="store_true", help="ONNX Runtime static quantization (--calibration)")
    p.add_argument("--input-size", type=positive_int, default=None, help="input height and width (default: the "
                   "model's)")
    p.add_argument("--images", default=None, help="folder of images to check the export on (default: random)")
    p.add_argument("--calibration", default=None, help="folder of images to calibrate int8 on")
    p.add_argument("--calibration-limit", type=positive_int, default=256, help="at most this many calibration images")
    p.add_argument("--test", default=None,
                   help="int8: folder of test images (class-named subfolders for accuracy) to compare fp32 and int8 on")
    p.add_argument("--test-limit", type=positive_int, default=1000, help="at most this many test images")
    p.add_argument("--atol", type=positive_float, default=None,
                   help="max logit difference accepted (fp32 1e-4, fp16 1e-2)")
    p.add_argument("--threads", type=positive_int, default=None, help="threads for the int8 speed comparison")
    p.set_defaults(func=cmd_export)
