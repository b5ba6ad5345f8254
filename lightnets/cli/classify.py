"""Classification commands: train, distill, specialists, eval and predict, each parser beside its command."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ..errors import LightnetsError
from ..report import format_table
from .options import (
    add_recipe_options,
    add_run_options,
    add_training_options,
    csv_of,
    device_name,
    recipe_overrides,
    training_kwargs,
)

if TYPE_CHECKING:
    from ..train import TrainResult


def report_run(result: TrainResult) -> bool:
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
    from ..train import train

    if args.data is None and args.resume is None:
        raise LightnetsError("give --data SOURCE (a folder, .tar/.tar.gz, CIFAR-10 archive, 'sample' or 'cifar10')")
    model_args = None
    if args.arch:
        from ..models.mnas_space import as_arch

        model_args = {"arch": as_arch(args.arch).to_dict()}
    report_run(train(args.model, args.data, args.recipe or "fast", model_args=model_args, **training_kwargs(args)))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from ..train import distill

    if args.resume is None and (not args.teacher or args.student is None or args.data is None):
        raise LightnetsError("give --teacher CKPT[,CKPT...], --student MODEL and --data SOURCE (or --resume RUN_DIR)")
    result = distill(args.student, args.teacher, args.data, args.recipe or "fast", temperature=args.temperature,
                     alpha=args.alpha, combine=args.combine, distill_recipe=args.distill_recipe,
                     **training_kwargs(args))
    if report_run(result):
        record = result.config["distill"]
        print(f"taught by {', '.join(t['model'] for t in record['teachers'])} (T={record['temperature']:g}, "
              f"alpha={record['alpha']:g}, {record['combine']} averaged)")
    return 0


def cmd_specialists(args: argparse.Namespace) -> int:
    from ..train import specialists

    result = specialists(args.generalist, args.data, args.groups, args.recipe, held_out=args.held_out,
                         top_k=args.top_k, out=args.out, exist_ok=args.exist_ok, device=args.device,
                         strict=args.strict, progress=not args.quiet, **recipe_overrides(args))
    for names, run in zip(result.groups, result.runs, strict=True):
        print(f"specialist for {', '.join(names)}: {run.run_dir} (test top-1 {run.test.top1:.2f}% "
              f"over {', '.join(run.test.classes)})")
    print(format_table(result.rows()))
    print(f"wrote {result.run_dir / 'specialists.json'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..train import evaluate
    from ..train.plots import plot_confusion

    result = evaluate(args.checkpoint, args.data, val_split=args.val_split, tta=args.tta, device=args.device,
                      strict=args.strict)
    if result.skipped:
        print(f"skipped {len(result.skipped)} undecodable image(s), first: {result.skipped[0]}")
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
    from ..train import predict

    checkpoint = args.checkpoint
    backend = args.backend or ("auto" if str(checkpoint).endswith(".onnx") else "torch")
    if backend == "auto" and str(checkpoint).endswith(".onnx"):
        from ..bench.probe import choose_runtime

        backend, line = choose_runtime(checkpoint)
        print(line, file=sys.stderr)
    if backend not in ("torch", "auto"):  # an exported .onnx file, fed by the same pre-processing
        from ..deploy import OnnxClassifier

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


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on CIFAR-10, an image folder or the built-in sample")
    p.add_argument("--model", default=None, help="any name of `lightnets models` (default vovnet27_slim_cifar)")
    p.add_argument("--arch", default=None, metavar="FILE.json", help="mnas_space models: the architecture (a file "
                   "from `lightnets search`, `lightnets adapt` or written by hand)")
    add_training_options(p, "train")
    p.set_defaults(func=cmd_train)

    from ..train.distill import DISTILL_RECIPES

    p = sub.add_parser("distill", help="train a student on one or more teachers' soft targets (Hinton et al.)")
    p.add_argument("--teacher", type=csv_of(str, "checkpoints"), default=None, metavar="CKPT[,CKPT...]",
                   help="teacher run folders or checkpoint files; several are averaged")
    p.add_argument("--student", default=None, help="the model to train: any name of `lightnets models`")
    p.add_argument("--temperature", type=float, default=None, help="softmax temperature (default: --distill-recipe's)")
    p.add_argument("--alpha", type=float, default=None, help="weight of the soft targets, 1 - alpha on the labels")
    p.add_argument("--combine", choices=["probs", "logits"], default=None,
                   help="average the teachers' probabilities (default) or their logits")
    p.add_argument("--distill-recipe", choices=list(DISTILL_RECIPES), default=None,
                   help="temperature and alpha: default (T=4, alpha=0.9) or hinton-asr (T=20, alpha=0.5)")
    add_training_options(p, "distill")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("specialists", help="specialists for the classes a generalist confuses (Hinton et al. 5)")
    p.add_argument("generalist", metavar="GENERALIST_CKPT", help="run folder or checkpoint .safetensors/.json")
    p.add_argument("--data", required=True, help="the generalist's data source; its test split scores the result")
    p.add_argument("--groups", type=int, default=3, help="k of k-means on the generalist's confusions (default 3)")
    p.add_argument("--held-out", type=int, default=5000,
                   help="training images (a seeded subset) whose predictions are clustered (default 5000)")
    p.add_argument("--top-k", type=int, default=1,
                   help="specialists whose group holds one of the generalist's top-k classes take part (default 1)")
    add_recipe_options(p, "fast, source, source_wd (default: fast at lr 0.02 without warm-up, to fine-tune)")
    add_run_options(p, "specialists")
    p.set_defaults(func=cmd_specialists)

    p = sub.add_parser("eval", help="top-1, top-5, per-class accuracy and confusion matrix of a checkpoint")
    p.add_argument("checkpoint", help="run folder (its best checkpoint) or checkpoint .safetensors/.json")
    p.add_argument("--data", required=True, help="data source, as for train; its test split is used")
    p.add_argument("--val-split", type=float, default=None, help="evaluate on this held-out fraction of train/")
    p.add_argument("--tta", action="store_true", help="average each image with its mirror")
    p.add_argument("--strict", action="store_true")
    p.add_argument("--out", default=None, help="write confusion.txt and confusion.png here")
    p.add_argument("--device", type=device_name, default=None)
    p.set_defaults(func=cmd_eval)

    from ..deploy.runtimes import RUNTIMES

    p = sub.add_parser("predict", help="top-k classes with probabilities for images or folders of images")
    p.add_argument("checkpoint", help="run folder (its best checkpoint) or checkpoint .safetensors/.json")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--strict", action="store_true")
    p.add_argument("--device", type=device_name, default=None)
    p.add_argument("--backend", choices=["auto", "torch", *RUNTIMES], default=None,
                   help="torch: a checkpoint; otherwise a file from `lightnets export`, run by that runtime "
                        "(openvino_bf16: OpenVINO in bf16, on CPUs with bf16 instructions); default: torch for a "
                        "checkpoint, auto (the fastest installed runtime, measured once) for an .onnx file")
    p.set_defaults(func=cmd_predict)
