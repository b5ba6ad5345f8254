"""Keypoints: keypoint data (LSP/LSPet and COCO readers, the LSP skeleton), the Convolutional Pose Machine (stages of
heat maps on any backbone) with its Gaussian targets, loss and sub-pixel decoding, PCK metrics, and multiview
triangulation and bootstrapping of new labels from calibrated views (Simon et al. 2017); training on person crops
(``train_pose``, ``lightnets pose train``), evaluation, prediction with the skeleton drawn, and ONNX export.

    model = create_pose_machine("mobilenetv3_small_100", num_joints=14, stages=3)   # one (B, 15, H/8, W/8) per stage

    data = read_keypoint_data("lspet.tar")                              # joints.mat, keypoints.json or COCO json
    train, val = data.split_by_name("im09001", "im10000")
    report = evaluate_pck(pred, target, visible)                        # PCK@0.2 per joint, curve, AUC
    result = bootstrap(detections, cameras, threshold=20.0, top_n=500)   # detections (frames, joints, views, 2)
    result.frames, result.labels                                         # best frames first, labels in every view
    train_pose("lspet.tar", "efficientnet_lite0", pretrained=True, val_split=("im09001", "im10000"))
    bootstrap_rounds("runs/train/pose-cpm3/last", "capture/", "lspet.tar", "runs/boot", val_split=(...), rounds=2)
"""

from .bootstrap import Capture, bootstrap_rounds, read_capture
from .crops import PoseAugment, PoseCache
from .deploy import export_pose_machine
from .heatmaps import decode_heatmaps, flip_heatmaps, flip_keypoints, gaussian_heatmaps, heatmap_loss
from .infer import draw_skeleton, evaluate_pose, find_keypoints, load_pose_machine, predict_files, write_keypoints
from .keypoints import (
    LSP_FLIP_PAIRS,
    LSP_JOINTS,
    LSP_LIMBS,
    LSP_TORSO,
    KeypointDataset,
    KeypointRecord,
    flip_permutation,
    person_box,
    read_keypoint_data,
)
from .metrics import PCKReport, auc, evaluate_pck, mean_pixel_error, pck, pck_at, pck_curve, plot_pck_curve, torso_size
from .model import PoseMachine, create_pose_machine
from .multiview import (
    Bootstrap,
    Triangulation,
    bootstrap,
    frame_scores,
    mean_inlier_error,
    project_points,
    select_frames,
    triangulate_dlt,
    triangulate_ransac,
    undistort_points,
)
from .train import POSE_RECIPE, train_pose

__all__ = ["LSP_FLIP_PAIRS", "LSP_JOINTS", "LSP_LIMBS", "LSP_TORSO", "POSE_RECIPE", "Bootstrap", "Capture",
           "KeypointDataset", "KeypointRecord", "PCKReport", "PoseAugment", "PoseCache", "PoseMachine",
           "Triangulation", "auc", "bootstrap", "bootstrap_rounds", "create_pose_machine", "decode_heatmaps",
           "draw_skeleton", "evaluate_pck", "evaluate_pose", "export_pose_machine", "find_keypoints",
           "flip_heatmaps", "flip_keypoints", "flip_permutation", "frame_scores", "gaussian_heatmaps",
           "heatmap_loss", "load_pose_machine", "mean_inlier_error", "mean_pixel_error", "pck", "pck_at",
           "pck_curve", "person_box", "plot_pck_curve", "predict_files", "project_points", "read_capture",
           "read_keypoint_data", "select_frames", "torso_size", "train_pose", "triangulate_dlt",
           "triangulate_ransac", "undistort_points", "write_keypoints"]
