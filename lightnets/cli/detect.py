"""`lightnets detect ...`: CenterNet synthetic pages, training, evaluation, prediction, latency and export."""

from __future__ import annotations

import argparse

from ..detect.train import RECIPE_FIELDS_UNUSED
from ..errors import LightnetsError
from ..report import format_table
from .options import add_pretrained_option, add_recipe_options, csv_of, device_name, human, pair_of, recipe_overrides


def _metric_row(metrics: dict[str, float]) -> list[dict[str, str]]:
    return [{name: f"{value:.4f}" for name, value in metrics.items()}]


def _page_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (``2400x3900``)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 2400x3900, got {text!r}")
    return int(parts[0]), int(parts[1])


def cmd_detect_synth(args: argparse.Namespace) -> int:
    from ..detect import synthetic_pages
    from ..detect.pages import book_pages

    if args.preset == "kuzushiji":
        size = args.page_size or (2400, 3900)
        path = book_pages(args.out, args.pages, size=size, seed=args.seed)
    else:
        path = synthetic_pages(args.out, args.pages, size=args.page_size or (args.width, args.height),
                               char_sizes=args.char_sizes, seed=args.seed)
    print(f"wrote {args.pages} pages to {path}/images with annotations.json (COCO) and labels.csv (Kuzushiji)")
    return 0


def _chips(args: argparse.Namespace):  # noqa: ANN202 - a ChipConfig, imported lazily with the library
    """``--chips`` and its settings as a ChipConfig (None without --chips)."""
    if not args.chips:
        if args.negatives_from:
            raise LightnetsError("--negatives-from needs --chips: negative chips are for chip training")
        return None
    from ..detect.chips import SNIPER_RANGES, SNIPER_SCALES, ChipConfig

    scales = tuple(args.chip_scales) if args.chip_scales else SNIPER_SCALES
    ranges = tuple(args.chip_ranges) if args.chip_ranges else SNIPER_RANGES
    return ChipConfig(size=args.chip_size, stride=args.chip_stride, scales=scales, ranges=ranges)


def _size_range(text: str) -> tuple[float, float]:
    """``LOW-HIGH`` box sizes in px (``120-inf``)."""
    low, _, high = text.partition("-")
    try:
        return float(low), float(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH such as 32-150 or 120-inf, got {text!r}") from None


def cmd_detect_train(args: argparse.Namespace) -> int:
    from ..detect import DETECTION_RECIPE, DetectionAugment, train_detector

    augment = None if args.no_augment else DetectionAugment(scale=args.scale, flip=args.flip)
    overrides = recipe_overrides(args, exclude=RECIPE_FIELDS_UNUSED)
    result = train_detector(args.data, args.backbone, val_data=args.val_data, val_split=args.val_split,
                            class_agnostic=args.class_agnostic, input_size=args.input_size, stacks=args.stacks,
                            recipe=DETECTION_RECIPE, augment=augment, repeat=args.repeat, top_k=args.top_k,
                            out=args.out, exist_ok=args.exist_ok, resume=args.resume, device=args.device,
                            pretrained=args.pretrained, chips=_chips(args), negatives_from=args.negatives_from,
                            negatives_per_page=args.negatives_per_page, min_proposals=args.min_proposals,
                            **overrides)
    if result.config.get("skipped"):
        print("skipped " + ", ".join(f"{n} {what}" for what, n in result.config["skipped"].items()))
    print(format_table(_metric_row(result.metrics)))
    print(f"run folder: {result.run_dir}")
    return 0


def add_tile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiles", default="none", metavar="none|auto|SCALES",
                   help="none: whole images letterboxed (default); SCALES such as 1 or 1,0.5: overlapping tiles of "
                   "the input size at those scales, for pages larger than the network; auto: the checkpoint's "
                   "tiling when it records one, else none")
    p.add_argument("--tile-overlap", type=int, default=None, help="px between neighbouring tiles (default a quarter "
                   "of the input size): boxes up to this size are seen whole")


def cmd_detect_eval(args: argparse.Namespace) -> int:
    from ..detect import evaluate_detector

    metrics = evaluate_detector(args.checkpoint, args.data, top_k=args.top_k, score_threshold=args.score_threshold,
                                tiles=args.tiles, tile_overlap=args.tile_overlap,
                                f1_threshold=args.f1_threshold, batch_size=args.batch_size, device=args.device)
    print(format_table(_metric_row(metrics)))
    return 0


def cmd_detect_predict(args: argparse.Namespace) -> int:
    from ..detect import predict_files

    results = predict_files(args.checkpoint, args.inputs, out_dir=args.out, top_k=args.top_k,
                            score_threshold=args.score_threshold, show_labels=not args.no_labels, device=args.device,
                            tiles=args.tiles, tile_overlap=args.tile_overlap)
    print(format_table([{"image": str(path), "detections": str(len(found))} for path, found in results]))
    print(f"drawn to {args.out}/")
    return 0


def cmd_detect_export(args: argparse.Namespace) -> int:
    from ..detect import export_detector

    result = export_detector(args.checkpoint, args.out, input_size=args.input_size, opset=args.opset, atol=args.atol)
    print(f"wrote {result.path} (opset {result.opset}, input {result.input_size}x{result.input_size}, "
          f"{result.folded_bn} batch norms folded; outputs heatmap, size, offset: decode with "
          "lightnets.detect.decode_heads)")
    diffs = ", ".join(f"{name} {diff:.2e}" for name, diff in result.max_abs_diff.items())
    print(f"check against PyTorch on seeded random inputs: max |difference| {diffs}")
    return 0


def cmd_detect_benchmark(args: argparse.Namespace) -> int:
    from ..detect import detector_latency
    from ..report import format_markdown

    results = detector_latency(args.backbones, num_classes=args.num_classes, stacks=args.stacks,
                               input_size=args.input_size, top_k=args.top_k, threads=args.threads,
                               min_time=args.min_time)
    rows = [{"backbone": r.name, "stacks": str(r.stacks), "input": str(r.input_size), "params": human(r.params),
             "MACs": human(r.macs), "median ms": f"{r.timing.median_ms:.1f}", "p90 ms": f"{r.timing.p90_ms:.1f}",
             "x first": f"{r.vs_first:.2f}", "threads": str(r.threads)} for r in results]
    print((format_markdown if args.markdown else format_table)(rows))
    print("batch 1, eval mode, torch.inference_mode, heads and top-K decoding included (random weights); "
          "timed side by side, medians")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="CenterNet detection: synth, train, eval, predict, benchmark, export")
    detect = p.add_subparsers(dest="detect_command", required=True, metavar="ACTION")
    d = detect.add_parser("synth", help="write synthetic document pages (COCO json and Kuzushiji csv)")
    d.add_argument("out", help="folder to write images/, annotations.json and labels.csv to")
    d.add_argument("--pages", type=int, default=200)
    d.add_argument("--width", type=int, default=512)
    d.add_argument("--height", type=int, default=512)
    d.add_argument("--char-sizes", type=pair_of(int, "integers"), default=(14, 32), help="font sizes LOW,HIGH")
    d.add_argument("--preset", choices=("clean", "kuzushiji"), default="clean",
                   help="kuzushiji: real-size book pages with the layout of a real scanned book (CODH 100249371), "
                   "unannotated ruby marks, a printed frame, bleed-through, uneven lighting, a dark border")
    d.add_argument("--page-size", type=_page_size, default=None, metavar="WxH",
                   help="page size, such as 2400x3900 (the kuzushiji preset's default)")
    d.add_argument("--seed", type=int, default=0, help="another seed gives held-out pages")
    d.set_defaults(func=cmd_detect_synth)

    d = detect.add_parser("train", help="train a CenterNet on any backbone (COCO json or Kuzushiji csv data)")
    d.add_argument("data", nargs="?", default=None, help="directory or archive (not needed with --resume)")
    # Defaults None (see lightnets.detect.train.DEFAULTS), so that --resume can tell an option given from one not.
    d.add_argument("--backbone", default=None, help="any name of `lightnets models` (default mobilenetv3_large_100)")
    d.add_argument("--stacks", type=int, default=None, help="1 + the number of refinement stages (default 1)")
    d.add_argument("--input-size", type=int, default=None, help="letterboxed square input (default 512)")
    d.add_argument("--val-data", default=None, help="validation data (default: hold out --val-split of the pages)")
    d.add_argument("--val-split", type=float, default=None, help="fraction of the pages held out (default 0.1)")
    d.add_argument("--class-agnostic", action="store_true", default=None,
                   help="every box one class (character localisation)")
    d.add_argument("--top-k", type=int, default=None,
                   help="detections kept per image (default 100; thousands for dense pages)")
    d.add_argument("--repeat", type=int, default=None, help="passes over the pages per epoch (default 1)")
    d.add_argument("--chips", action="store_true", help="train on SNIPER chips of full-resolution pages (the input "
                   "size is the chip size), evaluate tile by tile")
    d.add_argument("--chip-size", type=int, default=512, help="chip side, px (default 512)")
    d.add_argument("--chip-stride", type=int, default=32, help="step between candidate chips, px (default 32)")
    d.add_argument("--chip-scales", type=csv_of(float, "numbers"), default=None, metavar="S1,S2,PX",
                   help="finest first, the last the longer side in px (default SNIPER's 3,1.667,512)")
    d.add_argument("--chip-ranges", type=csv_of(_size_range, "ranges"), default=None, metavar="LOW-HIGH,...",
                   help="valid sqrt(w h) per scale in page px (default SNIPER's 0-80,32-150,120-inf)")
    d.add_argument("--negatives-from", default=None, metavar="RUN",
                   help="a weak detector trained on positive chips only: its proposals make negative chips")
    d.add_argument("--negatives-per-page", type=int, default=2, help="negative chips drawn per page each epoch")
    d.add_argument("--min-proposals", type=int, default=10, help="proposals a negative chip must hold")
    d.add_argument("--scale", type=pair_of(float, "numbers"), default=(0.75, 1.33), help="random zoom range LOW,HIGH")
    d.add_argument("--flip", type=float, default=0.0, help="horizontal flip probability (keep 0 for text)")
    d.add_argument("--no-augment", action="store_true")
    add_recipe_options(d, None, exclude=RECIPE_FIELDS_UNUSED)
    d.add_argument("--threads", type=int, default=None, help="CPU threads (default: the fastest measured here)")
    d.add_argument("--out", default=None, help="run folder (default runs/train/detect-BACKBONE[-N])")
    d.add_argument("--exist-ok", action="store_true")
    d.add_argument("--resume", default=None, metavar="RUN_DIR")
    add_pretrained_option(d, "the backbone")
    d.add_argument("--device", type=device_name, default=None)
    d.set_defaults(func=cmd_detect_train)

    d = detect.add_parser("eval", help="COCO mAP and Kuzushiji F1 of a detection checkpoint on a data set")
    d.add_argument("checkpoint", help="run folder or checkpoint file")
    d.add_argument("data")
    d.add_argument("--top-k", type=int, default=None, help="default: the checkpoint's")
    d.add_argument("--score-threshold", type=float, default=0.05)
    d.add_argument("--f1-threshold", type=float, default=0.3, help="score a detection needs to count for F1")
    d.add_argument("--batch-size", type=int, default=8)
    add_tile_options(d)
    d.add_argument("--device", type=device_name, default=None)
    d.set_defaults(func=cmd_detect_eval)

    d = detect.add_parser("predict", help="detect objects in images and draw them (png)")
    d.add_argument("checkpoint")
    d.add_argument("inputs", nargs="+", help="image files or folders")
    d.add_argument("--out", default="runs/detect/predict", help="folder for the drawn images")
    d.add_argument("--top-k", type=int, default=None)
    d.add_argument("--score-threshold", type=float, default=0.3)
    d.add_argument("--no-labels", action="store_true", help="boxes only (for pages with thousands of characters)")
    add_tile_options(d)
    d.add_argument("--device", type=device_name, default=None)
    d.set_defaults(func=cmd_detect_predict)

    d = detect.add_parser("benchmark", help="batch-1 CPU latency of detectors, heads and decoding included")
    d.add_argument("--backbones", type=csv_of(str, "model names"), default=["mobilenetv3_large_100", "efficientnet_b0"])
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
