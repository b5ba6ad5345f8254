"""`lightnets segment ...`: semantic segmentation training, evaluation, prediction, latency and export."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..deploy.runtimes import RUNTIMES
from ..errors import LightnetsError
from ..report import format_markdown, format_table
from ..segment.model import HEADS
from ..segment.train import RECIPE_FIELDS_UNUSED
from .options import (
    add_pretrained_option,
    add_recipe_options,
    csv_of,
    device_name,
    human,
    pair_of,
    positive_int,
    recipe_overrides,
)


def _metrics_table(metrics: dict[str, float]) -> str:
    """The summary metrics, then one row per class IoU."""
    summary = [{name: f"{metrics[name]:.2f}" for name in ("miou", "pixel_acc", "mean_acc")}]
    per_class = [{"class": name[4:], "IoU %": f"{value:.2f}"} for name, value in metrics.items()
                 if name.startswith("iou_")]
    return format_table(summary) + "\n" + format_table(per_class)


def cmd_segment_train(args: argparse.Namespace) -> int:
    from ..segment import SEGMENTATION_RECIPE, SegmentationAugment, train_segmenter

    augment = None if args.no_augment else SegmentationAugment(scale=args.scale, flip=args.flip)
    result = train_segmenter(args.data, args.backbone, head=args.head, head_channels=args.head_channels,
                             output_stride=args.output_stride, reduced_tail=args.reduced_tail,
                             val_data=args.val_data, classes_file=args.classes, palette_file=args.palette,
                             class_weights=args.class_weights, crop=args.crop, augment=augment, repeat=args.repeat,
                             recipe=SEGMENTATION_RECIPE, out=args.out, exist_ok=args.exist_ok, resume=args.resume,
                             device=args.device, progress=not args.quiet, pretrained=args.pretrained,
                             **recipe_overrides(args, exclude=RECIPE_FIELDS_UNUSED))
    print(_metrics_table(result.metrics))
    print(f"run folder: {result.run_dir}")
    return 0


def cmd_segment_eval(args: argparse.Namespace) -> int:
    from ..segment import evaluate_exported, evaluate_segmenter

    split = None if args.split == "all" else args.split
    if Path(args.checkpoint).suffix == ".onnx":
        metrics, confusion = evaluate_exported(args.checkpoint, args.data, split, runtime=args.runtime or "onnxruntime",
                                               threads=args.threads, classes_file=args.classes,
                                               palette_file=args.palette)
    elif args.runtime:
        raise LightnetsError(f"--runtime runs an exported .onnx file, and {args.checkpoint} is a checkpoint; export "
                             "it first with `lightnets segment export`")
    else:
        metrics, confusion = evaluate_segmenter(args.checkpoint, args.data, split, classes_file=args.classes,
                                                palette_file=args.palette, batch_size=args.batch_size,
                                                device=args.device)
    print(_metrics_table(metrics))
    if args.confusion:
        from ..train.plots import plot_confusion

        classes = [name[4:] for name in metrics if name.startswith("iou_")]
        if plot_confusion(confusion, classes, Path(args.confusion), cells="percent") is None:
            print("no confusion.png: matplotlib is not installed (pip install 'lightnets[plot]')")
        else:
            print(f"confusion matrix (row %): {args.confusion}")
    return 0


def cmd_segment_predict(args: argparse.Namespace) -> int:
    from ..segment import predict_files

    results = predict_files(args.checkpoint, args.inputs, out_dir=args.out, alpha=args.alpha,
                            save_masks=args.save_masks, device=args.device)
    print(format_table([{"image": str(path), "size": f"{m.shape[1]}x{m.shape[0]}"} for path, m in results]))
    print(f"overlays written to {args.out}/")
    return 0


def cmd_segment_export(args: argparse.Namespace) -> int:
    from ..segment import export_segmenter

    result = export_segmenter(args.checkpoint, args.out, input_size=args.input_size, opset=args.opset,
                              atol=args.atol)
    height, width = result.input_size
    print(f"wrote {result.path} (opset {result.opset}, input {width}x{height}, {result.folded_bn} batch norms "
          f"folded; output logits: argmax over channels gives the class map)")
    print(f"check against PyTorch on seeded random inputs: max |difference| {result.max_abs_diff:.2e}")
    return 0


def cmd_segment_benchmark(args: argparse.Namespace) -> int:
    from ..segment import segmenter_latency

    specs = [{"name": f"{head}-{args.head_channels}", "backbone": backbone, "head": head,
              "head_channels": args.head_channels, "num_classes": args.num_classes,
              "output_stride": args.output_stride, "reduced_tail": args.reduced_tail}
             for backbone in args.backbones for head in args.heads]
    if len(args.backbones) > 1:
        for spec in specs:
            spec["name"] = f"{spec['backbone']} {spec['name']}"
    results = segmenter_latency(specs, sizes=[tuple(s) for s in args.sizes], backends=args.backends,
                                threads=args.threads, min_time=args.min_time)
    rows = [{"segmenter": r.name, "input": f"{r.input_size[1]}x{r.input_size[0]}", "path": r.backend,
             "params": human(r.params), "MACs": human(r.macs),
             "median ms": f"{r.timing.median_ms:.1f}" if r.timing else r.status,
             "p90 ms": f"{r.timing.p90_ms:.1f}" if r.timing else "-",
             "x first": f"{r.vs_first:.2f}" if r.vs_first is not None else "-", "threads": str(r.threads)}
            for r in results]
    print((format_markdown if args.markdown else format_table)(rows))
    print("batch 1, eval mode, random weights; timed side by side per input size and path, medians")
    return 0


def _size(text: str) -> tuple[int, int]:
    """``HxW`` (``360x480``) as (H, W)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 360x480, got {text!r}")
    return int(parts[0]), int(parts[1])


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="semantic segmentation (LR-ASPP, R-ASPP, FCN): train, eval, predict, "
                       "benchmark, export")
    segment = p.add_subparsers(dest="segment_command", required=True, metavar="ACTION")
    d = segment.add_parser("train", help="train a segmenter on image/mask pairs (train split; val split evaluated)")
    d.add_argument("data", nargs="?", default=None, help="directory or archive (not needed with --resume)")
    # Defaults None (see lightnets.segment.train.DEFAULTS), so that --resume can tell an option given from one not.
    d.add_argument("--backbone", default=None, help="any name of `lightnets models` (default mobilenetv3_large_100)")
    d.add_argument("--head", choices=HEADS, default=None, help="segmentation head (default lraspp)")
    d.add_argument("--head-channels", type=positive_int, default=None, help="the head's filters (default 128)")
    d.add_argument("--output-stride", type=int, choices=(8, 16, 32), default=None,
                   help="backbone output stride; 16 and 8 dilate the later stages (default 16)")
    d.add_argument("--reduced-tail", action="store_true", default=None,
                   help="MobileNetV3: halve the last stage (the paper's RF2)")
    d.add_argument("--val-data", default=None, help="validation data (default: the val split of DATA)")
    d.add_argument("--classes", default=None, metavar="FILE", help="classes file ('INDEX NAME' lines; Void ignored)")
    d.add_argument("--palette", default=None, metavar="FILE", help="'R G B NAME' lines, for colour-coded masks")
    d.add_argument("--class-weights", choices=("none", "median"), default=None,
                   help="weigh the loss by median-frequency balancing (default none)")
    d.add_argument("--crop", type=_size, default=None, help="training crop HxW (default: the images' size)")
    d.add_argument("--scale", type=pair_of(float, "numbers"), default=(0.5, 2.0), help="random rescale LOW,HIGH")
    d.add_argument("--flip", type=float, default=0.5, help="horizontal flip probability")
    d.add_argument("--no-augment", action="store_true")
    d.add_argument("--repeat", type=positive_int, default=None, help="passes over the images per epoch (default 1)")
    add_recipe_options(d, None, exclude=RECIPE_FIELDS_UNUSED)
    d.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads (default: the fastest measured here)")
    d.add_argument("--out", default=None, help="run folder (default runs/train/segment-HEAD-BACKBONE[-N])")
    d.add_argument("--exist-ok", action="store_true")
    d.add_argument("--resume", default=None, metavar="RUN_DIR")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    add_pretrained_option(d, "the backbone")
    d.add_argument("--device", type=device_name, default=None)
    d.set_defaults(func=cmd_segment_train)

    d = segment.add_parser("eval", help="mIoU, per-class IoU and pixel accuracy of a checkpoint on a data set")
    d.add_argument("checkpoint", help="run folder, checkpoint file, or a file of `lightnets segment export` (.onnx)")
    d.add_argument("data")
    d.add_argument("--split", default="val", help="the split to evaluate: train, val, test, or all (default val)")
    d.add_argument("--runtime", choices=RUNTIMES, default=None,
                   help="run an exported .onnx file on this runtime (default onnxruntime)")
    d.add_argument("--threads", type=positive_int, default=None, help="the runtime's threads (default: its own)")
    d.add_argument("--classes", default=None, metavar="FILE")
    d.add_argument("--palette", default=None, metavar="FILE")
    d.add_argument("--batch-size", type=positive_int, default=4)
    d.add_argument("--confusion", default=None, metavar="PNG", help="also draw the confusion matrix (row %%) there")
    d.add_argument("--device", type=device_name, default=None)
    d.set_defaults(func=cmd_segment_eval)

    d = segment.add_parser("predict", help="segment images and write colour overlays (png)")
    d.add_argument("checkpoint")
    d.add_argument("inputs", nargs="+", help="image files or folders")
    d.add_argument("--out", default="runs/segment/predict", help="folder for the overlays")
    d.add_argument("--alpha", type=float, default=0.5, help="weight of the class colours in the overlay")
    d.add_argument("--save-masks", action="store_true", help="also write each class map as NAME_mask.png")
    d.add_argument("--device", type=device_name, default=None)
    d.set_defaults(func=cmd_segment_predict)

    d = segment.add_parser("benchmark", help="batch-1 CPU latency of segmenters, eager and on the deploy path")
    d.add_argument("--backbones", type=csv_of(str, "model names"), default=["mobilenetv3_large_100"])
    d.add_argument("--heads", type=csv_of(str, "heads"), default=["lraspp", "raspp"])
    d.add_argument("--head-channels", type=positive_int, default=128)
    d.add_argument("--output-stride", type=int, choices=(8, 16, 32), default=16)
    d.add_argument("--reduced-tail", action="store_true")
    d.add_argument("--num-classes", type=positive_int, default=11)
    d.add_argument("--sizes", type=csv_of(_size, "HxW sizes"), default=[(360, 480)], help="e.g. 360x480,1024x2048")
    d.add_argument("--backends", type=csv_of(str, "backends"), default=["eager", "onnxruntime"])
    d.add_argument("--threads", type=positive_int, default=None)
    d.add_argument("--min-time", type=float, default=2.0, help="seconds of timed runs per segmenter and path")
    d.add_argument("--markdown", action="store_true", help="print the table as markdown")
    d.set_defaults(func=cmd_segment_benchmark)

    d = segment.add_parser("export", help="fold batch norm, export a segmenter to ONNX, check it against PyTorch")
    d.add_argument("checkpoint", help="segmentation run folder or checkpoint file")
    d.add_argument("--out", default=None, help="the .onnx file (default: the checkpoint's, suffix .onnx)")
    d.add_argument("--opset", type=int, default=18)
    d.add_argument("--input-size", type=_size, default=None, help="HxW (default: the checkpoint's)")
    d.add_argument("--atol", type=float, default=1e-4, help="max difference accepted (scaled above 1)")
    d.set_defaults(func=cmd_segment_export)
