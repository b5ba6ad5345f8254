"""The ``lightnets`` command: parses arguments and calls the library; holds no logic of its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import __version__
from .errors import LightnetsError
from .report import format_table

if TYPE_CHECKING:
    from .search import ProxyBudget
    from .train import TrainResult


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def cmd_models(args: argparse.Namespace) -> int:
    from .report import models_table

    rows = models_table(args.pattern)
    if not rows:
        raise LightnetsError(f"no model matches {args.pattern!r}; run `lightnets models` for the list")
    print(format_table(rows))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .report import model_report

    print(model_report(args.model, args.input_size))
    return 0


def _csv(kind: type, what: str):
    """An argparse type for comma-separated values, e.g. ``--batch-sizes 1,32``."""

    def parse(text: str) -> list:
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None

    return parse


def cmd_benchmark(args: argparse.Namespace) -> int:
    from .bench import (
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
        from .bench import BACKENDS, backend_missing

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
    from .bench.doctor import doctor, facts_text

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
    import tempfile
    from pathlib import Path

    import torch

    from .export import compare_onnx, export_onnx, load_for_deploy, load_images

    model, info = load_for_deploy(args.model)
    if args.input_size:
        info = dataclasses.replace(info, input_size=args.input_size)
    precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"
    if precision == "int8":
        from .bench.machine import cpu_info

        if not cpu_info().vnni:
            print(f"lightnets: warning: this CPU ({cpu_info().name}) has no VNNI (int8 dot-product) instructions: "
                  "int8 may run no faster than fp32 here; the comparison below measures it", file=sys.stderr)
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
        test_dir = args.test or args.images or args.calibration
        images, labels = load_images(test_dir, info, args.test_limit)
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", info, opset=args.opset,
                               dynamic_batch=args.dynamic_batch).path
            rows = compare_onnx({"fp32": fp32, "int8": result.path}, images, labels, args.threads)
        print(f"\nfp32 against int8 on {test_dir} (ONNX Runtime, batch 1):\n{format_table(rows)}")
    return 0


def _pair(kind: type, what: str):
    """An argparse type for two comma-separated values, e.g. ``--scale 0.75,1.33``."""

    def parse(text: str) -> tuple:
        values = _csv(kind, what)(text)
        if len(values) != 2:
            raise argparse.ArgumentTypeError(f"expected two comma-separated {what}, got {text!r}")
        return tuple(values)

    return parse


def _metric_row(metrics: dict[str, float]) -> list[dict[str, str]]:
    return [{name: f"{value:.4f}" for name, value in metrics.items()}]


def cmd_detect_synth(args: argparse.Namespace) -> int:
    from .detect import synthetic_pages

    path = synthetic_pages(args.out, args.pages, size=(args.width, args.height), char_sizes=args.char_sizes,
                           seed=args.seed)
    print(f"wrote {args.pages} pages to {path}/images with annotations.json (COCO) and labels.csv (Kuzushiji)")
    return 0


def cmd_detect_train(args: argparse.Namespace) -> int:
    from .detect import DETECTION_RECIPE, DetectionAugment, train_detector

    augment = None if args.no_augment else DetectionAugment(scale=args.scale, flip=args.flip)
    overrides = {k: getattr(args, k) for k in ("epochs", "batch_size", "opt", "lr", "wd", "schedule", "warmup",
                                                "ema", "grad_clip", "amp", "channels_last", "budget_min", "seed")}
    result = train_detector(args.data, args.backbone, val_data=args.val_data, val_split=args.val_split,
                            class_agnostic=args.class_agnostic, input_size=args.input_size, stacks=args.stacks,
                            recipe=DETECTION_RECIPE, augment=augment, repeat=args.repeat, top_k=args.top_k,
                            out=args.out, exist_ok=args.exist_ok, resume=args.resume, device=args.device,
                            threads=args.threads, **overrides)
    print(format_table(_metric_row(result.metrics)))
    print(f"run folder: {result.run_dir}")
    return 0


def cmd_detect_eval(args: argparse.Namespace) -> int:
    from .detect import evaluate_detector

    metrics = evaluate_detector(args.checkpoint, args.data, top_k=args.top_k, score_threshold=args.score_threshold,
                                f1_threshold=args.f1_threshold, batch_size=args.batch_size, device=args.device)
    print(format_table(_metric_row(metrics)))
    return 0


def cmd_detect_predict(args: argparse.Namespace) -> int:
    from .detect import predict_files

    results = predict_files(args.checkpoint, args.inputs, out_dir=args.out, top_k=args.top_k,
                            score_threshold=args.score_threshold, show_labels=not args.no_labels, device=args.device)
    print(format_table([{"image": str(path), "detections": str(len(found))} for path, found in results]))
    print(f"drawn to {args.out}/")
    return 0


def cmd_detect_export(args: argparse.Namespace) -> int:
    from .detect import export_detector

    result = export_detector(args.checkpoint, args.out, input_size=args.input_size, opset=args.opset, atol=args.atol)
    print(f"wrote {result.path} (opset {result.opset}, input {result.input_size}x{result.input_size}, "
          f"{result.folded_bn} batch norms folded; outputs heatmap, size, offset: decode with "
          "lightnets.detect.decode_heads)")
    diffs = ", ".join(f"{name} {diff:.2e}" for name, diff in result.max_abs_diff.items())
    print(f"check against PyTorch on seeded random inputs: max |difference| {diffs}")
    return 0


def cmd_detect_benchmark(args: argparse.Namespace) -> int:
    from .detect import detector_latency
    from .report import format_markdown

    results = detector_latency(args.backbones, num_classes=args.num_classes, stacks=args.stacks,
                               input_size=args.input_size, top_k=args.top_k, threads=args.threads,
                               min_time=args.min_time)
    rows = [{"backbone": r.name, "stacks": str(r.stacks), "input": str(r.input_size), "params": _human(r.params),
             "MACs": _human(r.macs), "median ms": f"{r.timing.median_ms:.1f}", "p90 ms": f"{r.timing.p90_ms:.1f}",
             "x first": f"{r.vs_first:.2f}", "threads": str(r.threads)} for r in results]
    print((format_markdown if args.markdown else format_table)(rows))
    print("batch 1, eval mode, torch.inference_mode, heads and top-K decoding included (random weights); "
          "timed side by side, medians")
    return 0


def _recipe_overrides(args: argparse.Namespace) -> dict:
    """The recipe fields given by the options of ``_add_recipe_options`` (None: the recipe's own), and --threads."""
    fields = ("epochs", "batch_size", "opt", "lr", "wd", "schedule", "warmup", "label_smoothing", "ema", "grad_clip",
              "cutout", "seed", "budget_min", "channels_last")
    overrides = {k: getattr(args, k) for k in fields}
    overrides["amp"] = args.amp  # "none" turns the recipe's autocast off
    overrides |= {k: True for k in ("compile", "tta") if getattr(args, k)}
    overrides |= {"crop_pad": 0, "flip": False} if args.no_augment else {}
    return overrides | {"threads": args.threads}


def _training_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments ``train`` (and ``distill``) take from the options of ``_add_training_options``."""
    return dict(out=args.out, exist_ok=args.exist_ok, resume=args.resume, image_size=args.image_size,
                val_split=args.val_split, train_subset=args.train_subset, strict=args.strict, device=args.device,
                progress=not args.quiet, **_recipe_overrides(args))


def _report_run(result: TrainResult) -> bool:
    """Print a finished run's summary table; False (and nothing printed) on the processes that do not report."""
    import os

    if os.environ.get("RANK", "0") != "0":  # under torchrun, one process reports
        return False
    if result.skipped:
        print(f"skipped {len(result.skipped)} undecodable image(s), first: {result.skipped[0]}")
    print(format_table(result.summary_rows()))
    print(f"run folder: {result.run_dir} (best and last checkpoints, metrics.jsonl, curves.png, confusion.png)")
    return True


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    if args.data is None and args.resume is None:
        raise LightnetsError("give --data SOURCE (a folder, .tar/.tar.gz, CIFAR-10 archive, 'sample' or 'cifar10')")
    model_args = None
    if args.arch:
        from .models.mnas_space import as_arch

        model_args = {"arch": as_arch(args.arch).to_dict()}
    _report_run(train(args.model, args.data, args.recipe or "fast", model_args=model_args, **_training_kwargs(args)))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from .train import distill

    if args.resume is None and (not args.teacher or args.student is None or args.data is None):
        raise LightnetsError("give --teacher CKPT[,CKPT...], --student MODEL and --data SOURCE (or --resume RUN_DIR)")
    if args.resume is not None and any(v is not None for v in (args.temperature, args.alpha, args.combine,
                                                                args.distill_recipe)):
        raise LightnetsError("a resumed distillation keeps its teachers, temperature, alpha and combine")
    result = distill(args.student, args.teacher, args.data, args.recipe or "fast", temperature=args.temperature,
                     alpha=args.alpha, combine=args.combine or "probs", distill_recipe=args.distill_recipe or "default",
                     **_training_kwargs(args))
    if _report_run(result):
        record = result.config["distill"]
        print(f"taught by {', '.join(t['model'] for t in record['teachers'])} (T={record['temperature']:g}, "
              f"alpha={record['alpha']:g}, {record['combine']} averaged)")
    return 0


def cmd_specialists(args: argparse.Namespace) -> int:
    from .train import specialists

    result = specialists(args.generalist, args.data, args.groups, args.recipe, held_out=args.held_out,
                         top_k=args.top_k, out=args.out, exist_ok=args.exist_ok, device=args.device,
                         strict=args.strict, progress=not args.quiet, **_recipe_overrides(args))
    for names, run in zip(result.groups, result.runs, strict=True):
        print(f"specialist for {', '.join(names)}: {run.run_dir} (test top-1 {run.test.top1:.2f}% "
              f"over {', '.join(run.test.classes)})")
    print(format_table(result.rows()))
    print(f"wrote {result.run_dir / 'specialists.json'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .train import evaluate
    from .train.plots import plot_confusion

    result = evaluate(args.checkpoint, args.data, val_split=args.val_split, tta=args.tta, device=args.device,
                      strict=args.strict)
    print(f"{args.checkpoint} on {args.data}: top-1 {result.top1:.2f}%, top-5 {result.top5:.2f}%, "
          f"loss {result.loss:.4f}, {result.count} images\n")
    print(format_table(result.class_rows()))
    print("\nconfusion matrix (rows: true class)\n" + result.confusion_text())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "confusion.txt").write_text(result.confusion_text() + "\n")
        written = plot_confusion(result.confusion, result.classes, out / "confusion.png")
        print(f"\nwrote {out / 'confusion.txt'}" + (f" and {written}" if written else ""))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .train import predict

    checkpoint = args.checkpoint
    backend = args.backend or ("auto" if str(checkpoint).endswith(".onnx") else "torch")
    if backend == "auto" and str(checkpoint).endswith(".onnx"):
        from .bench.probe import choose_runtime

        backend, line = choose_runtime(checkpoint)
        print(line, file=sys.stderr)
    if backend not in ("torch", "auto"):  # an exported .onnx file, fed by the same pre-processing
        from .export import OnnxClassifier

        checkpoint = OnnxClassifier(args.checkpoint, backend)
    results, skipped = predict(checkpoint, args.inputs, topk=args.topk, batch_size=args.batch_size,
                               device=args.device, strict=args.strict)
    rows = [{"image": str(path), **{f"top-{i + 1}": f"{c} {100 * p:.1f}%" for i, (c, p) in enumerate(top)}}
            for path, top in results]
    if rows:
        print(format_table(rows))
    if skipped:
        print(f"skipped {len(skipped)} undecodable image(s), first: {skipped[0]}")
    return 0


def cmd_latency_table(args: argparse.Namespace) -> int:
    from .search import latency_table

    table, path = latency_table(args.space, args.input_size, args.table, device=args.device, threads=args.threads,
                                min_time=args.min_time, clock=args.clock, progress=not args.quiet,
                                log=lambda msg: print(msg, file=sys.stderr))
    d = table.device
    print(f"wrote {path}: {len(table.entries)} entries, {d['name']}, {d['threads']} thread(s), {d['clock']} clock, "
          f"torch {d['torch']}")
    return 0


def _proxy_budget(args: argparse.Namespace) -> ProxyBudget:
    """The proxy-training budget from the options given; the rest keep ``ProxyBudget``'s defaults."""
    from .search import ProxyBudget

    given = {k: getattr(args, k) for k in ("train_images", "val_images", "epochs", "batch_size", "lr", "wd", "seed")}
    return ProxyBudget(**{k: v for k, v in given.items() if v is not None})


def cmd_search(args: argparse.Namespace) -> int:
    from .search import search

    budget = _proxy_budget(args)
    result = search(args.space, args.data, target_ms=args.target_ms, w=args.w, w_over=args.w_over,
                    population=args.population, sample=args.sample, cycles=args.cycles, seed=budget.seed,
                    budget=budget, table=args.table, input_size=args.input_size, device=args.device,
                    threads=args.threads, min_time=args.min_time, clock=args.clock, out=args.out,
                    exist_ok=args.exist_ok, resume=args.resume, log=lambda msg: print(msg, file=sys.stderr))
    print(format_table(result.rows()))
    print(f"target {result.target_ms:.2f} ms; search folder: {result.run_dir} (candidates.jsonl, pareto.png, "
          "best_arch.json)")
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    from .search import ProxyBudget, adapt
    from .search.netadapt import SHORT_FINETUNE

    given = {"train_images": args.short_images, "val_images": args.val_images, "epochs": args.short_epochs,
             "batch_size": args.short_batch_size, "lr": args.short_lr}
    short = ProxyBudget(**(SHORT_FINETUNE.to_dict() | {k: v for k, v in given.items() if v is not None}))
    finetune = {k: v for k in ("epochs", "lr", "batch_size", "budget_min") if (v := getattr(args, k)) is not None}
    result = adapt(args.checkpoint, args.target_latency, args.data, out=args.out, resume=args.resume, step=args.step,
                   decay=args.decay, granularity=args.granularity, short=short, finetune=finetune,
                   compare=not args.no_compare, table=args.table,
                   input_size=args.input_size, device=args.device, threads=args.threads, min_time=args.min_time,
                   clock=args.clock, progress=not args.quiet, log=lambda msg: print(msg, file=sys.stderr))
    if result.iterations:
        print(format_table(result.rows()))
    top1 = f", test top-1 {result.test_top1:.2f}%" if result.test_top1 is not None else ""
    print(f"predicted latency {result.source_ms:.3f} -> {result.latency_ms:.3f} ms (target {result.target_ms}){top1}; "
          f"checkpoint {result.checkpoint}")
    if result.uniform:
        print(f"uniform width {result.uniform['width_mult']:g} predicts {result.uniform['latency_ms']:.3f} ms: "
              f"{result.run_dir / 'uniform_arch.json'}")
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    from .search import compound_scaling

    budget = _proxy_budget(args)
    result = compound_scaling(args.data, model=args.model, base_width=args.base_width, base_depth=args.base_depth,
                              base_size=args.input_size, step=args.step, tolerance=args.tolerance,
                              grid_limit=args.grid_limit, seed=budget.seed, budget=budget, out=args.out,
                              exist_ok=args.exist_ok, resume=args.resume, device=args.device, threads=args.threads,
                              min_time=args.min_time, clock=args.clock, log=lambda msg: print(msg, file=sys.stderr))
    print(result.markdown())
    print(f"scale folder: {result.run_dir} (grid.jsonl, comparison.md)")
    return 0


def _add_speed_options(p: argparse.ArgumentParser) -> None:
    """Precision and layout; left out (or auto), they are measured on this machine at the start of the run."""
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "none"], default=None,
                   help="autocast precision (default auto: the fastest measured here; none: fp32)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="memory layout (default: the faster measured here)")


def _add_recipe_options(p: argparse.ArgumentParser, recipe_help: str = "fast (default), source, source_wd") -> None:
    """The recipe and its overrides, for every command that trains a classifier (no --recipe: the command's default)."""
    p.add_argument("--recipe", default=None, help=f"named recipe: {recipe_help}")
    for name, kind in (("epochs", int), ("batch-size", int), ("lr", float), ("wd", float), ("warmup", float),
                       ("label-smoothing", float), ("ema", float), ("grad-clip", float), ("cutout", int),
                       ("seed", int)):
        p.add_argument(f"--{name}", type=kind, default=None, help="overrides the recipe")
    p.add_argument("--opt", choices=["sgd", "adam", "adamw"], default=None)
    p.add_argument("--schedule", choices=["cosine", "onecycle", "step", "constant"], default=None)
    _add_speed_options(p)
    p.add_argument("--budget-min", type=float, default=None, help="stop after this many minutes of training, "
                   "with the LR schedule completed over the time")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--tta", action="store_true", help="evaluate on each image and its mirror")
    p.add_argument("--no-augment", action="store_true", help="no crop and flip (the source's no-augmentation rows)")


def _add_run_options(p: argparse.ArgumentParser, kind: str) -> None:
    """Where and how a training command runs."""
    p.add_argument("--strict", action="store_true", help="stop at the first undecodable image instead of skipping")
    p.add_argument("--out", default=None, help=f"run folder (default runs/{kind}/MODEL[-N])")
    p.add_argument("--exist-ok", action="store_true", help="overwrite an existing run folder")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the best available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the fastest measured here)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_training_options(p: argparse.ArgumentParser, kind: str) -> None:
    """The options of `lightnets train` besides the model, shared with `lightnets distill`."""
    p.add_argument("--data", default=None, help="image folder, .tar/.tar.gz, CIFAR-10 python archive, "
                   "'sample' (built in) or 'cifar10' (official release, downloaded once)")
    _add_recipe_options(p)
    p.add_argument("--image-size", type=int, default=None, help="decode size (default: the model's input size)")
    p.add_argument("--val-split", type=float, default=None, help="hold out this fraction of train/ (seeded)")
    p.add_argument("--train-subset", type=int, default=None, metavar="N",
                   help="train on N images of the training split, class-balanced (seeded by --seed)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a stopped run exactly")
    _add_run_options(p, kind)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightnets", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lightnets {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the registered models with params, MACs and the papers' figures")
    p.add_argument("pattern", nargs="?", default=None, help="shell wildcard or substring, e.g. 'mobilenetv3*'")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("info", help="a model's stages (channels, stride), params and MACs per stage")
    p.add_argument("model")
    p.add_argument("--input-size", type=int, default=None, help="input height and width (default: the model's)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train a model on CIFAR-10, an image folder or the built-in sample")
    p.add_argument("--model", default="vovnet27_slim_cifar", help="any name of `lightnets models`")
    p.add_argument("--arch", default=None, metavar="FILE.json", help="mnas_space models: the architecture (a file "
                   "from `lightnets search`, `lightnets adapt` or written by hand)")
    _add_training_options(p, "train")
    p.set_defaults(func=cmd_train)

    from .train.kd import RECIPES as DISTILL_RECIPES

    p = sub.add_parser("distill", help="train a student on one or more teachers' soft targets (Hinton et al.)")
    p.add_argument("--teacher", type=_csv(str, "checkpoints"), default=None, metavar="CKPT[,CKPT...]",
                   help="teacher run folders or checkpoint files; several are averaged")
    p.add_argument("--student", default=None, help="the model to train: any name of `lightnets models`")
    p.add_argument("--temperature", type=float, default=None, help="softmax temperature (default: --distill-recipe's)")
    p.add_argument("--alpha", type=float, default=None, help="weight of the soft targets, 1 - alpha on the labels")
    p.add_argument("--combine", choices=["probs", "logits"], default=None,
                   help="average the teachers' probabilities (default) or their logits")
    p.add_argument("--distill-recipe", choices=list(DISTILL_RECIPES), default=None,
                   help="temperature and alpha: default (T=4, alpha=0.9) or hinton-asr (T=20, alpha=0.5)")
    _add_training_options(p, "distill")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("specialists", help="specialists for the classes a generalist confuses (Hinton et al. 5)")
    p.add_argument("generalist", metavar="GENERALIST_CKPT", help="run folder or checkpoint .safetensors/.json")
    p.add_argument("--data", required=True, help="the generalist's data source; its test split scores the result")
    p.add_argument("--groups", type=int, default=3, help="k of k-means on the generalist's confusions (default 3)")
    p.add_argument("--held-out", type=int, default=5000,
                   help="training images (a seeded subset) whose predictions are clustered (default 5000)")
    p.add_argument("--top-k", type=int, default=1,
                   help="specialists whose group holds one of the generalist's top-k classes take part (default 1)")
    _add_recipe_options(p, "fast, source, source_wd (default: fast at lr 0.02 without warm-up, to fine-tune)")
    _add_run_options(p, "specialists")
    p.set_defaults(func=cmd_specialists)

    p = sub.add_parser("eval", help="top-1, top-5, per-class accuracy and confusion matrix of a checkpoint")
    p.add_argument("checkpoint", help="run folder (its best checkpoint) or checkpoint .safetensors/.json")
    p.add_argument("--data", required=True, help="data source, as for train; its test split is used")
    p.add_argument("--val-split", type=float, default=None, help="evaluate on this held-out fraction of train/")
    p.add_argument("--tta", action="store_true", help="average each image with its mirror")
    p.add_argument("--strict", action="store_true")
    p.add_argument("--out", default=None, help="write confusion.txt and confusion.png here")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_eval)

    from .export import RUNTIMES

    p = sub.add_parser("predict", help="top-k classes with probabilities for images or folders of images")
    p.add_argument("checkpoint", help="run folder (its best checkpoint) or checkpoint .safetensors/.json")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--strict", action="store_true")
    p.add_argument("--device", default=None)
    p.add_argument("--backend", choices=["auto", "torch", *RUNTIMES], default=None,
                   help="torch: a checkpoint; otherwise a file from `lightnets export`, run by that runtime "
                        "(openvino_bf16: OpenVINO in bf16, on CPUs with bf16 instructions); default: torch for a "
                        "checkpoint, auto (the fastest installed runtime, measured once) for an .onnx file")
    p.set_defaults(func=cmd_predict)

    from .bench.backends import BACKENDS

    p = sub.add_parser("benchmark", help="latency, throughput and training speed per model and backend")
    p.add_argument("--models", type=_csv(str, "model names or checkpoints"), default=None,
                   help="comma-separated model names or checkpoint files")
    p.add_argument("--checkpoint", action="append", default=[], help="a checkpoint whose accuracy joins the table")
    p.add_argument("--preset", choices=["source"], default=None,
                   help="'source': the source experiment's CIFAR table (train s/epoch, 10k test images at bs 1 and 32)")
    p.add_argument("--input-size", type=int, default=None, help="input height and width (default: each model's)")
    p.add_argument("--batch-sizes", type=_csv(int, "integers"), default=[1, 32],
                   help="batch 1 gives latency, larger ones throughput (default 1,32)")
    p.add_argument("--backends", type=_csv(str, "backend names"), default=["eager"],
                   help=f"comma-separated, from {', '.join(BACKENDS)}, or auto: every one that runs here, the "
                        "fastest named (default eager)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--train-step", action="store_true", help="also time a training step (img/s, s per CIFAR epoch)")
    p.add_argument("--train-batch", type=int, default=128, help="batch of the training step (default 128)")
    p.add_argument("--train-amp", choices=["auto", "bf16", "fp16", "none"], default="auto",
                   help="the training step's autocast (default auto: the faster here of fp32 and native bf16)")
    p.add_argument("--min-time", type=float, default=2.0, help="seconds of timed runs per backend and batch")
    p.add_argument("--out", action="append", default=[], help="write the results to FILE.json or FILE.csv")
    p.add_argument("--plot", default=None, help="draw accuracy against latency (needs checkpoints) to FILE.png")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("doctor", help="this machine: CPU flags, cores, versions, and what runs fastest (~30 s)")
    p.add_argument("--model", default="vovnet27_slim_cifar", help="the model to measure on (default a small one)")
    p.add_argument("--batch", type=int, default=32, help="training batch of the measurement (default 32)")
    p.add_argument("--no-measure", action="store_true", help="the facts only, nothing timed")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("export", help="fold batch norm, export to ONNX, check it against PyTorch")
    p.add_argument("model", metavar="MODEL_OR_CHECKPOINT")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--output", "-o", default=None, help="the .onnx file (default: MODEL[_fp16|_int8].onnx)")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--dynamic-batch", action="store_true", help="accept any batch size (default: batch 1)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="compute in half precision (fp32 inputs/outputs)")
    precision.add_argument("--int8", action="store_true", help="ONNX Runtime static quantization (--calibration)")
    p.add_argument("--input-size", type=int, default=None, help="input height and width (default: the model's)")
    p.add_argument("--images", default=None, help="folder of images to check the export on (default: random)")
    p.add_argument("--calibration", default=None, help="folder of images to calibrate int8 on")
    p.add_argument("--calibration-limit", type=int, default=256, help="at most this many calibration images")
    p.add_argument("--test", default=None,
                   help="int8: folder of test images (class-named subfolders for accuracy) to compare fp32 and int8 on")
    p.add_argument("--test-limit", type=int, default=1000, help="at most this many test images")
    p.add_argument("--atol", type=float, default=None, help="max logit difference accepted (fp32 1e-4, fp16 1e-2)")
    p.add_argument("--threads", type=int, default=None, help="threads for the int8 speed comparison")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("detect", help="CenterNet detection: synth, train, eval, predict, benchmark, export")
    detect = p.add_subparsers(dest="detect_command", required=True, metavar="ACTION")
    d = detect.add_parser("synth", help="write synthetic document pages (COCO json and Kuzushiji csv)")
    d.add_argument("out", help="folder to write images/, annotations.json and labels.csv to")
    d.add_argument("--pages", type=int, default=200)
    d.add_argument("--width", type=int, default=512)
    d.add_argument("--height", type=int, default=512)
    d.add_argument("--char-sizes", type=_pair(int, "integers"), default=(14, 32), help="font sizes LOW,HIGH")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_detect_synth)

    d = detect.add_parser("train", help="train a CenterNet on any backbone (COCO json or Kuzushiji csv data)")
    d.add_argument("data", nargs="?", default=None, help="directory or archive (not needed with --resume)")
    d.add_argument("--backbone", default="mobilenetv3_large_100", help="any name of `lightnets models`")
    d.add_argument("--stacks", type=int, default=1, help="1 + the number of refinement stages")
    d.add_argument("--input-size", type=int, default=512, help="letterboxed square input (default 512)")
    d.add_argument("--val-data", default=None, help="validation data (default: hold out --val-split of the pages)")
    d.add_argument("--val-split", type=float, default=0.1)
    d.add_argument("--class-agnostic", action="store_true", help="every box one class (character localisation)")
    d.add_argument("--top-k", type=int, default=100, help="detections kept per image (thousands for dense pages)")
    d.add_argument("--repeat", type=int, default=1, help="passes over the pages per epoch")
    d.add_argument("--scale", type=_pair(float, "numbers"), default=(0.75, 1.33), help="random zoom range LOW,HIGH")
    d.add_argument("--flip", type=float, default=0.0, help="horizontal flip probability (keep 0 for text)")
    d.add_argument("--no-augment", action="store_true")
    for name, kind in (("epochs", int), ("batch-size", int), ("lr", float), ("wd", float), ("warmup", float),
                       ("ema", float), ("grad-clip", float), ("seed", int)):
        d.add_argument(f"--{name}", type=kind, default=None)
    d.add_argument("--opt", choices=["sgd", "adam", "adamw"], default=None)
    d.add_argument("--schedule", choices=["cosine", "onecycle", "step", "constant"], default=None)
    _add_speed_options(d)
    d.add_argument("--threads", type=int, default=None, help="CPU threads (default: the fastest measured here)")
    d.add_argument("--budget-min", type=float, default=None, help="stop after this many minutes of training "
                   "(CPU time per thread on a CPU), with the LR schedule completed over the time")
    d.add_argument("--out", default=None, help="run folder (default runs/train/detect-BACKBONE[-N])")
    d.add_argument("--exist-ok", action="store_true")
    d.add_argument("--resume", default=None, metavar="RUN_DIR")
    d.add_argument("--device", default=None)
    d.set_defaults(func=cmd_detect_train)

    d = detect.add_parser("eval", help="COCO mAP and Kuzushiji F1 of a detection checkpoint on a data set")
    d.add_argument("checkpoint", help="run folder or checkpoint file")
    d.add_argument("data")
    d.add_argument("--top-k", type=int, default=None, help="default: the checkpoint's")
    d.add_argument("--score-threshold", type=float, default=0.05)
    d.add_argument("--f1-threshold", type=float, default=0.3, help="score a detection needs to count for F1")
    d.add_argument("--batch-size", type=int, default=8)
    d.add_argument("--device", default=None)
    d.set_defaults(func=cmd_detect_eval)

    d = detect.add_parser("predict", help="detect objects in images and draw them (png)")
    d.add_argument("checkpoint")
    d.add_argument("inputs", nargs="+", help="image files or folders")
    d.add_argument("--out", default="runs/detect/predict", help="folder for the drawn images")
    d.add_argument("--top-k", type=int, default=None)
    d.add_argument("--score-threshold", type=float, default=0.3)
    d.add_argument("--no-labels", action="store_true", help="boxes only (for pages with thousands of characters)")
    d.add_argument("--device", default=None)
    d.set_defaults(func=cmd_detect_predict)

    d = detect.add_parser("benchmark", help="batch-1 CPU latency of detectors, heads and decoding included")
    d.add_argument("--backbones", type=_csv(str, "model names"), default=["mobilenetv3_large_100", "efficientnet_b0"])
    d.add_argument("--stacks", type=int, default=1)
    d.add_argument("--input-size", type=int, default=512)
    d.add_argument("--num-classes", type=int, default=1)
    d.add_argument("--top-k", type=int, default=100)
    d.add_argument("--threads", type=int, default=None)
    d.add_argument("--min-time", type=float, default=2.0, help="seconds of timed runs per detector")
    d.add_argument("--markdown", action="store_true", help="print the table as markdown")
    d.set_defaults(func=cmd_detect_benchmark)

    d = detect.add_parser("export", help="fold batch norm, export a detector to ONNX, check it against PyTorch")
    d.add_argument("checkpoint", help="detection run folder or checkpoint file")
    d.add_argument("--out", default=None, help="the .onnx file (default: the checkpoint's, suffix .onnx)")
    d.add_argument("--opset", type=int, default=18)
    d.add_argument("--input-size", type=int, default=None, help="square input (default: the checkpoint's)")
    d.add_argument("--atol", type=float, default=1e-4, help="max difference accepted per output (scaled above 1)")
    d.set_defaults(func=cmd_detect_export)

    def add_latency_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--input-size", type=int, default=None, help="input side (default: the space's, 224 or 32)")
        p.add_argument("--table", default=None, help="latency table file (default: one per space, input size and "
                       "device in the lightnets cache); entries already in it are reused")
        p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
        p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
        p.add_argument("--min-time", type=float, default=2.0, help="seconds of timed runs per table entry")
        p.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="wall (the protocol) or cpu: one "
                       "thread's CPU time, without other processes' time slices (--threads 1 on a busy machine)")

    p = sub.add_parser("latency-table", help="time every distinct layer of a search space once (batch 1)")
    p.add_argument("--space", default="mobilenetv3", help="mobilenetv3 (224x224) or mobilenetv3_cifar (32x32)")
    add_latency_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_latency_table)

    p = sub.add_parser("search", help="latency-aware architecture search (MnasNet reward, regularized evolution)")
    p.add_argument("--space", default="mobilenetv3_cifar", help="mobilenetv3_cifar (default) or mobilenetv3")
    p.add_argument("--data", default="sample", help="proxy training data: 'sample' (built in), 'cifar10', a folder")
    p.add_argument("--target-ms", type=float, default=None,
                   help="latency target T (default: the predicted latency of the MobileNetV3-Large-like member)")
    p.add_argument("--w", type=float, default=-0.07, help="reward exponent: -0.07 (MnasNet), -0.15 (small models)")
    p.add_argument("--w-over", type=float, default=None, help="exponent over the target (default: --w)")
    p.add_argument("--population", type=int, default=10)
    p.add_argument("--sample", type=int, default=3, help="members drawn per cycle; the best is mutated")
    p.add_argument("--cycles", type=int, default=20, help="mutated candidates after the random population")
    from .search import ProxyBudget

    for name, kind, what in (("train-images", int, ""), ("val-images", int, ", held out of the training split"),
                             ("epochs", int, ""), ("batch-size", int, ""), ("lr", float, ", AdamW"),
                             ("wd", float, ""), ("seed", int, "; also seeds the search")):
        default = getattr(ProxyBudget(), name.replace("-", "_"))
        p.add_argument(f"--{name}", type=kind, default=None, help=f"proxy training (default {default}{what})")
    add_latency_options(p)
    p.add_argument("--out", default=None, help="search folder (default runs/search/SPACE[-N])")
    p.add_argument("--exist-ok", action="store_true", help="overwrite an existing search folder")
    p.add_argument("--resume", action="store_true", help="continue the search in --out, reusing its accuracies")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("adapt", help="NetAdapt: prune a trained mnas_space network to a latency target")
    p.add_argument("checkpoint", help="run folder or checkpoint of a mnas_space model")
    p.add_argument("--target-latency", type=float, required=True, metavar="MS", help="predicted batch-1 latency "
                   "to reach, ms (the latency table's)")
    p.add_argument("--data", default=None, help="data source (default: the checkpoint's)")
    p.add_argument("--step", type=float, default=0.04, help="latency reduction per iteration, a fraction of the "
                   "current latency (default 0.04)")
    p.add_argument("--decay", type=float, default=0.96, help="the step's decay per iteration (default 0.96)")
    p.add_argument("--granularity", type=int, default=8, help="channels are removed in multiples of this")
    from .search.netadapt import SHORT_FINETUNE

    for name, kind, what in (("short-images", int, "train_images"), ("val-images", int, "val_images"),
                             ("short-epochs", int, "epochs"), ("short-batch-size", int, "batch_size"),
                             ("short-lr", float, "lr")):
        default = getattr(SHORT_FINETUNE, what)
        p.add_argument(f"--{name}", type=kind, default=None,
                       help=f"each proposal's fine-tune: {what.replace('_', ' ')} (default {default})")
    p.add_argument("--epochs", type=int, default=None, help="the final fine-tune on the whole training split "
                   "(default 10; 0 skips it)")
    p.add_argument("--lr", type=float, default=None, help="the final fine-tune's SGD learning rate (default 0.02)")
    p.add_argument("--batch-size", type=int, default=None, help="the final fine-tune's batch (default 256)")
    p.add_argument("--budget-min", type=float, default=None, help="the final fine-tune's time budget, minutes")
    p.add_argument("--no-compare", action="store_true", help="skip the uniformly width-scaled network of equal "
                   "latency (uniform_arch.json)")
    add_latency_options(p)
    p.add_argument("--out", default=None, help="adapt folder (default runs/adapt/MODEL[-N])")
    p.add_argument("--resume", action="store_true", help="continue the run in --out after its last iteration")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser("scale", help="compound scaling: grid search of depth, width, resolution coefficients")
    p.add_argument("--data", default="sample", help="proxy training data: 'sample' (built in), 'cifar10', a folder")
    p.add_argument("--model", default="efficientnet_b0_cifar", help="a model taking width_mult and depth_mult")
    p.add_argument("--base-width", type=float, default=0.5, help="the base's width multiplier (default 0.5)")
    p.add_argument("--base-depth", type=float, default=0.5, help="the base's depth multiplier (default 0.5)")
    p.add_argument("--step", type=float, default=0.05, help="grid step of alpha, beta, gamma (default 0.05)")
    p.add_argument("--tolerance", type=float, default=0.1, help="|alpha beta^2 gamma^2 - 2| allowed (default 0.1)")
    p.add_argument("--grid-limit", type=int, default=None, help="evaluate this many grid points, drawn at random")
    for name, kind, what in (("train-images", int, ""), ("val-images", int, ", held out of the training split"),
                             ("epochs", int, ""), ("batch-size", int, ""), ("lr", float, ", AdamW"),
                             ("wd", float, ""), ("seed", int, "; also draws the grid points")):
        default = getattr(ProxyBudget(), name.replace("-", "_"))
        p.add_argument(f"--{name}", type=kind, default=None, help=f"proxy training (default {default}{what})")
    p.add_argument("--input-size", type=int, default=None, help="the base's input side (default: the model's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--min-time", type=float, default=2.0, help="seconds of timed runs per network")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall", help="wall (the protocol) or cpu")
    p.add_argument("--out", default=None, help="scale folder (default runs/scale/MODEL[-N])")
    p.add_argument("--exist-ok", action="store_true", help="overwrite an existing scale folder")
    p.add_argument("--resume", action="store_true", help="continue in --out, reusing its evaluated points")
    p.set_defaults(func=cmd_scale)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (LightnetsError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
        if args.debug:
            raise
        print(f"lightnets: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lightnets: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
