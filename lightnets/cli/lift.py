"""`lightnets lift ...`: RepNet 2D-to-3D pose lifting, trained and evaluated on Human3.6M, applied to keypoints."""

from __future__ import annotations

import argparse

from ..lift.train import CRITIC_FRAMES, LOSS_NORMS, RECIPE_FIELDS_UNUSED
from ..report import format_table
from .options import add_recipe_options, device_name, positive_int, recipe_overrides


def _summary(metrics: dict[str, float]) -> str:
    keys = ("p1_mm", "p2_mm", "n_p1_mm", "pck3d", "auc", "symmetry_mm", "symmetry_truth_mm", "poses")
    return format_table([{k: str(metrics[k]) for k in keys if k in metrics}])


def cmd_lift_train(args: argparse.Namespace) -> int:
    from ..lift import LIFT_RECIPE, train_lifter

    result = train_lifter(args.data, inputs=args.inputs, kcs=not args.no_kcs, camera_loss=not args.no_camera_loss,
                          width=args.width, blocks=args.blocks, shared_trunk=args.shared_trunk,
                          loss_norm=args.loss_norm, critic_frame=args.critic_frame, recipe=LIFT_RECIPE, out=args.out,
                          exist_ok=args.exist_ok, resume=args.resume, device=args.device,
                          progress=not args.quiet, **recipe_overrides(args, exclude=RECIPE_FIELDS_UNUSED))
    print(_summary(result.metrics))
    print(f"run folder: {result.run_dir}")
    return 0


def cmd_lift_eval(args: argparse.Namespace) -> int:
    from ..lift import evaluate_lifter

    metrics = evaluate_lifter(args.checkpoint, args.data, inputs=args.inputs, device=args.device)
    print(_summary(metrics))
    actions = sorted(k[3:] for k in metrics if k.startswith("p1_") and k != "p1_mm")
    print(format_table([{"action": a, "P1 mm": str(metrics[f"p1_{a}"]), "P2 mm": str(metrics[f"p2_{a}"])}
                        for a in actions]))
    return 0


def cmd_lift_predict(args: argparse.Namespace) -> int:
    from ..lift import predict_keypoints

    path, plot = predict_keypoints(args.checkpoint, args.keypoints, args.out, joint_order=args.joints,
                                   device=args.device)
    print(f"wrote {path}" + (f" and {plot}" if plot else " (install matplotlib for the plot)"))
    return 0


def cmd_lift_convert(args: argparse.Namespace) -> int:
    from ..lift.convert import convert_h36m

    counts = convert_h36m(args.root, args.out, frame_step=args.frame_step)
    print(f"wrote {args.out}: {counts['sequences']} sequences, {counts['frames']} frames, "
          f"{counts['invalid']} invalid (frame, camera) detections")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lift", help="RepNet 2D-to-3D human pose lifting (Human3.6M)")
    lift = p.add_subparsers(dest="lift_command", required=True, metavar="VERB")

    d = lift.add_parser("train", help="train RepNet weakly supervised on Human3.6M (S1, S5-S8; tested on S9, S11)")
    d.add_argument("--data", default=None, help="Human3.6M npz in the 3d-pose-baseline layout (not needed with "
                   "--resume)")
    d.add_argument("--inputs", choices=("gt", "sh"), default="gt", help="2D inputs: ground truth projected through "
                   "the cameras, or Stacked-Hourglass detections")
    d.add_argument("--no-kcs", action="store_true", help="critic without the kinematic-chain-space path")
    d.add_argument("--no-camera-loss", action="store_true", help="train without the camera loss")
    d.add_argument("--width", type=positive_int, default=1000,
                   help="units per layer of the generator and camera network")
    d.add_argument("--blocks", type=positive_int, default=2, help="residual blocks of the generator and camera network")
    d.add_argument("--shared-trunk", action="store_true", help="the authors' code's layout: the generator and "
                   "camera network share their first residual block")
    d.add_argument("--loss-norm", choices=LOSS_NORMS, default="frobenius", help="reprojection and camera loss: the "
                   "paper's Frobenius norm, or the authors' code's joint-weighted L1")
    d.add_argument("--critic-frame", choices=CRITIC_FRAMES, default="camera", help="the frame of the critic's 3D "
                   "poses: as the training cameras see them, or each pose's own torso frame (aligned, as the authors')")
    add_recipe_options(d, None, exclude=RECIPE_FIELDS_UNUSED)
    d.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads (default: the fastest measured here)")
    d.add_argument("--out", default=None, help="run folder (default runs/lift/repnet-INPUTS[-N])")
    d.add_argument("--exist-ok", action="store_true")
    d.add_argument("--resume", default=None, metavar="RUN_DIR")
    d.add_argument("--device", type=device_name, default=None)
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_lift_train)

    d = lift.add_parser("convert", help="a 3d-pose-baseline Human3.6M folder (cameras.h5, S*/MyPoses, "
                        "S*/StackedHourglass) to the npz the other verbs read")
    d.add_argument("root", help="the folder holding cameras.h5 and S1 ... S11")
    d.add_argument("--out", required=True, help="the .npz to write")
    d.add_argument("--frame-step", type=positive_int, default=5, help="keep every Nth frame (5: 50 Hz to 10 Hz)")
    d.set_defaults(func=cmd_lift_convert)

    d = lift.add_parser("eval", help="MPJPE (protocols 1 and 2), 3DPCK, AUC and symmetry error on S9 and S11")
    d.add_argument("checkpoint", help="run folder or checkpoint file")
    d.add_argument("--data", required=True, help="Human3.6M npz")
    d.add_argument("--inputs", choices=("gt", "sh"), default=None, help="default: what the checkpoint trained on")
    d.add_argument("--device", type=device_name, default=None)
    d.set_defaults(func=cmd_lift_eval)

    d = lift.add_parser("predict", help="lift 2D keypoints (json, csv, npz) to 3D; writes json and a png")
    d.add_argument("checkpoint")
    d.add_argument("keypoints", help="2D poses: .json, .csv (x0,y0,x1,y1,...) or .npz (key 'keypoints'), "
                   "such as the --keypoints file of `lightnets pose predict`")
    d.add_argument("--out", default="poses3d.json", help="the .json to write (the png goes beside it)")
    d.add_argument("--joints", choices=("auto", "lightnets", "h36m17", "mpii"), default="auto",
                   help="joint order of the input (auto: the file's joint_names, as `lightnets pose predict "
                   "--keypoints` writes, else lightnets: Hip, RHip, RKnee, RFoot, LHip, ..., RWrist)")
    d.add_argument("--device", type=device_name, default=None)
    d.set_defaults(func=cmd_lift_predict)
