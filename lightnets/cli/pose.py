"""`lightnets pose ...`: keypoint (Convolutional Pose Machine) training, evaluation, prediction and export."""

from __future__ import annotations

import argparse

from ..report import format_table
from .options import (
    add_dataclass_options,
    add_pretrained_option,
    add_recipe_options,
    dataclass_values,
    device_name,
    positive_int,
    recipe_overrides,
)

AUGMENT_PREFIX = "aug-"


def _names(text: str) -> tuple[str, str]:
    """``FIRST,LAST`` image names (``im09001,im10000``)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected FIRST,LAST image names such as im09001,im10000, got {text!r}")
    return parts[0], parts[1]


def _zooms(text: str) -> tuple[float, ...]:
    """``Z[,Z...]`` test zooms, each > 0 (``0.8,1,1.2``)."""
    try:
        zooms = tuple(float(part) for part in text.split(","))
    except ValueError:
        zooms = ()
    if not zooms or not all(z > 0 for z in zooms):
        raise argparse.ArgumentTypeError(f"expected zooms > 0 such as 0.8,1,1.2, got {text!r}")
    return zooms


def _pck_table(report, joint_names: list[str]) -> str:
    from ..pose.task import pck_rows

    summary = [{"PCK@0.2 %": f"{100 * report.at(0.2):.1f}", "PCK@0.1 %": f"{100 * report.at(0.1):.1f}",
                "AUC %": f"{100 * report.auc:.1f}", "mean px": f"{report.mean_pixel_error:.1f}",
                "records without torso": str(report.skipped_records)}]
    rows = [{"joint": r["joint"], "PCK@0.2 %": f"{r['pck']:.1f}", "scored": str(r["scored"])}
            for r in pck_rows(report, joint_names)]
    return format_table(summary) + "\n" + format_table(rows)


def cmd_pose_train(args: argparse.Namespace) -> int:
    from ..pose import POSE_RECIPE, PoseAugment, train_pose
    from ..pose.train import RECIPE_FIELDS_UNUSED

    augment = None if args.no_augment else PoseAugment(**dataclass_values(args, PoseAugment, prefix=AUGMENT_PREFIX))
    result = train_pose(args.data, args.backbone, stages=args.stages, input_size=args.input_size,
                        output_stride=args.output_stride, sigma=args.sigma, val_split=args.val_split,
                        val_data=args.val_data, augment=augment, flip_test=not args.no_flip_test,
                        recipe=POSE_RECIPE, out=args.out, exist_ok=args.exist_ok, resume=args.resume,
                        device=args.device, progress=not args.quiet, pretrained=args.pretrained,
                        **recipe_overrides(args, exclude=RECIPE_FIELDS_UNUSED))
    metrics = result.metrics
    print(format_table([{"PCK@0.2 %": f"{metrics['pck']:.1f}", "PCK@0.1 %": f"{metrics['pck_0.1']:.1f}",
                         "AUC %": f"{metrics['auc']:.1f}", "mean px": f"{metrics['mean_px']:.1f}"}]))
    print(f"run folder: {result.run_dir}")
    return 0


def cmd_pose_eval(args: argparse.Namespace) -> int:
    from ..pose import evaluate_pose, plot_pck_curve

    report, dataset, _ = evaluate_pose(args.checkpoint, args.data, args.names, flip_test=not args.no_flip_test,
                                       zooms=args.zooms, device=args.device)
    print(f"{len(dataset)} records of {args.data}")
    print(_pck_table(report, dataset.joint_names))
    if args.curve:
        if plot_pck_curve({str(args.checkpoint): (report.thresholds, report.overall)}, args.curve) is None:
            print("no curve: matplotlib is not installed (pip install 'lightnets[plot]')")
        else:
            print(f"PCK curve: {args.curve}")
    return 0


def cmd_pose_predict(args: argparse.Namespace) -> int:
    from ..pose.infer import keypoints_path, load_pose_machine, predict_files, write_keypoints
    from ..train.run import pick_device

    if args.keypoints:
        keypoints_path(args.keypoints)  # a wrong name fails before the images are read
    model = load_pose_machine(args.checkpoint, pick_device(args.device))
    results = predict_files(model, args.inputs, out_dir=args.out, threshold=args.threshold,
                            flip_test=not args.no_flip_test, device=args.device)
    print(format_table([{"image": str(path), "joints found": f"{int((conf >= args.threshold).sum())}/{len(conf)}",
                         "mean confidence": f"{conf.mean():.2f}"} for path, _, conf in results]))
    print(f"skeletons drawn in {args.out}/")
    if args.keypoints:
        path = write_keypoints(results, model.checkpoint_meta["joint_names"], args.keypoints)
        print(f"keypoints written to {path} (3D: lightnets lift predict LIFT_RUN {path})")
    return 0


def cmd_pose_export(args: argparse.Namespace) -> int:
    from ..pose import export_pose_machine

    result = export_pose_machine(args.checkpoint, args.out, opset=args.opset, precision=args.precision,
                                 atol=args.atol)
    print(f"wrote {result.path} ({result.precision}, opset {result.opset}, {result.folded_bn} batch norms folded; "
          "output: the last stage's belief maps, joints then background)")
    print(f"check against PyTorch on seeded random inputs: max |difference| {result.max_abs_diff:.2e}")
    return 0


def cmd_pose_bootstrap(args: argparse.Namespace) -> int:
    from ..pose.bootstrap import bootstrap_rounds
    from ..pose.train import RECIPE_FIELDS_UNUSED

    rounds = bootstrap_rounds(args.detector, args.capture, args.data, args.out, rounds=args.rounds,
                              min_confidence=args.min_confidence, threshold=args.threshold, top_n=args.top_n,
                              val_split=args.val_split, val_data=args.val_data, progress=not args.quiet,
                              **recipe_overrides(args, exclude=RECIPE_FIELDS_UNUSED))
    print(format_table([{"round": str(r), "frames passed": str(len(done.step.frames)),
                         "labels added": str(len(done.added) if done.added else 0),
                         "PCK@0.2 % after": f"{done.train.metrics['pck']:.1f}", "folder": str(done.dir)}
                        for r, done in enumerate(rounds, start=1)]))
    print(f"each round's labels.json, scores.json and retraining (train/) are in {args.out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from ..pose.crops import PoseAugment
    from ..pose.train import RECIPE_FIELDS_UNUSED

    p = sub.add_parser("pose", help="keypoints (Convolutional Pose Machines): train, eval, predict, bootstrap, "
                       "export")
    pose = p.add_subparsers(dest="pose_command", required=True, metavar="ACTION")
    d = pose.add_parser("train", help="train a pose machine on person crops; PCK on the held-out records")
    d.add_argument("data", nargs="?", default=None, help="joints.mat + images/ (LSP, LSPet), keypoints.json or a "
                   "COCO keypoints json, as a folder or archive (not needed with --resume)")
    # Defaults None (see lightnets.pose.train.DEFAULTS), so that --resume can tell an option given from one not.
    d.add_argument("--backbone", default=None, help="any name of `lightnets models` (default mobilenetv3_large_100)")
    d.add_argument("--stages", type=positive_int, default=None, help="belief stages (default 3)")
    d.add_argument("--input-size", type=positive_int, default=None, help="crop side in px (default 128)")
    d.add_argument("--output-stride", type=int, choices=(4, 8), default=None, help="belief-map stride (default 8)")
    d.add_argument("--sigma", type=float, default=None, help="target Gaussian std in output px (default 1)")
    d.add_argument("--val-split", type=_names, default=None, metavar="FIRST,LAST",
                   help="hold out the images named FIRST to LAST (e.g. im09001,im10000)")
    d.add_argument("--val-data", default=None, help="validation data instead of --val-split")
    add_dataclass_options(d, PoseAugment, prefix=AUGMENT_PREFIX, default_help="augmentation ({default})",
                          defaults=PoseAugment())
    d.add_argument("--no-augment", action="store_true", help="plain centred crops")
    d.add_argument("--no-flip-test", action="store_true", help="final evaluation without the mirrored crop")
    add_recipe_options(d, None, exclude=RECIPE_FIELDS_UNUSED)
    d.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads (default: the fastest measured here)")
    d.add_argument("--out", default=None, help="run folder (default runs/train/pose-cpmSTAGES-BACKBONE[-N])")
    d.add_argument("--exist-ok", action="store_true")
    d.add_argument("--resume", default=None, metavar="RUN_DIR")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    add_pretrained_option(d, "the backbone")
    d.add_argument("--device", type=device_name, default=None)
    d.set_defaults(func=cmd_pose_train)

    d = pose.add_parser("eval", help="PCK per joint, its curve and AUC of a checkpoint on labelled data")
    d.add_argument("checkpoint", help="run folder or checkpoint file")
    d.add_argument("data")
    d.add_argument("--names", type=_names, default=None, metavar="FIRST,LAST",
                   help="only the images named FIRST to LAST (e.g. im09001,im10000)")
    d.add_argument("--no-flip-test", action="store_true", help="without averaging in the mirrored crop")
    d.add_argument("--zooms", type=_zooms, default=(1.0,), metavar="Z[,Z...]", help="multi-scale test: average "
                   "the maps of the crop magnified by each zoom (e.g. 0.8,1,1.2; default 1)")
    d.add_argument("--curve", default=None, metavar="PNG", help="also draw the PCK curve there")
    d.add_argument("--device", type=device_name, default=None)
    d.set_defaults(func=cmd_pose_eval)

    d = pose.add_parser("predict", help="find one person's joints in each image and draw the skeleton (png)")
    d.add_argument("checkpoint")
    d.add_argument("inputs", nargs="+", help="image files or folders (one person each, roughly centred)")
    d.add_argument("--out", default="runs/pose/predict", help="folder for the drawings")
    d.add_argument("--threshold", type=float, default=0.2, help="joints under this confidence are not drawn")
    d.add_argument("--keypoints", default=None, metavar="JSON",
                   help="also write the joints there (joint names, pixels, confidence), for `lightnets lift predict`")
    d.add_argument("--no-flip-test", action="store_true")
    d.add_argument("--device", type=device_name, default=None)
    d.set_defaults(func=cmd_pose_predict)

    d = pose.add_parser("bootstrap", help="multiview bootstrapping: label calibrated views with a detector, keep "
                        "the best-triangulated frames, retrain on them; repeat")
    d.add_argument("detector", help="pose run folder or checkpoint that labels the views")
    d.add_argument("--capture", required=True, help="folder or archive: cameras.json and images/FRAME/VIEW.jpg")
    d.add_argument("--data", required=True, help="the labelled data retraining also uses")
    d.add_argument("--val-split", type=_names, default=None, metavar="FIRST,LAST",
                   help="hold out the images of --data named FIRST to LAST")
    d.add_argument("--val-data", default=None, help="validation data instead of --val-split")
    d.add_argument("--rounds", type=positive_int, default=1)
    d.add_argument("--min-confidence", type=float, default=0.2, help="lambda: detections under it are dropped")
    d.add_argument("--threshold", type=float, default=20.0, help="RANSAC inlier threshold, px")
    d.add_argument("--top-n", type=positive_int, default=100, help="frames kept per round, best score first")
    add_recipe_options(d, None, exclude=RECIPE_FIELDS_UNUSED)
    d.add_argument("--threads", type=positive_int, default=None)
    d.add_argument("--out", required=True, help="folder for the rounds (round1/, round2/, ...)")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_pose_bootstrap)

    d = pose.add_parser("export", help="fold batch norm, export a pose machine to ONNX, check it against PyTorch")
    d.add_argument("checkpoint", help="pose run folder or checkpoint file")
    d.add_argument("--out", default=None, help="the .onnx file (default: the checkpoint's, suffix .onnx)")
    d.add_argument("--opset", type=int, default=18)
    d.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    d.add_argument("--atol", type=float, default=None, help="max difference accepted (scaled above 1; default "
                   "1e-4 fp32, 1e-2 fp16)")
    d.set_defaults(func=cmd_pose_export)

