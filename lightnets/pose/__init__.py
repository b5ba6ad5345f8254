"""Keypoints: keypoint data (LSP/LSPet and COCO readers, the LSP skeleton), the Convolutional Pose Machine (stages of
heat maps on any backbone) with its Gaussian targets, loss and sub-pixel decoding, PCK metrics, and multiview
triangulation and bootstrapping of new labels from calibrated views (Simon et al. 2017). Training and the
``lightnets pose`` commands are still to come.

    model = create_pose_machine("mobilenetv3_small_100", num_joints=14, stages=3)   # one (B, 15, H/8, W/8) per stage

    data = read_keypoint_data("lspet.tar")                              # joints.mat, keypoints.json or COCO json
    train, val = data.split_by_name("im09001", "im10000")
    report = evaluate_pck(pred, target, visible)                        # PCK@0.2 per joint, curve, AUC
    result = bootstrap(detections, cameras, threshold=20.0, top_n=500)   # detections (frames, joints, views, 2)
    result.frames, result.labels                                         # best frames first, labels in every view
"""

from .heatmaps import decode_heatmaps, flip_heatmaps, flip_keypoints, gaussian_heatmaps, heatmap_loss
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

__all__ = ["LSP_FLIP_PAIRS", "LSP_JOINTS", "LSP_LIMBS", "LSP_TORSO", "Bootstrap", "KeypointDataset", "KeypointRecord",
           "PCKReport", "PoseMachine", "Triangulation", "auc", "bootstrap", "create_pose_machine", "decode_heatmaps",
           "evaluate_pck", "flip_heatmaps", "flip_keypoints", "flip_permutation", "frame_scores", "gaussian_heatmaps",
           "heatmap_loss",
           "mean_inlier_error", "mean_pixel_error", "pck", "pck_at", "pck_curve", "person_box", "plot_pck_curve",
           "project_points", "read_keypoint_data", "select_frames", "torso_size", "triangulate_dlt",
           "triangulate_ransac", "undistort_points"]
