"""Keypoints: keypoint data (LSP/LSPet and COCO readers, the LSP skeleton), PCK metrics, and multiview
triangulation and bootstrapping of new labels from calibrated views (Simon et al. 2017). The CPM model and its
training are still to come.

    data = read_keypoint_data("lspet.tar")                              # joints.mat, keypoints.json or COCO json
    train, val = data.split_by_name("im09001", "im10000")
    report = evaluate_pck(pred, target, visible)                        # PCK@0.2 per joint, curve, AUC
    result = bootstrap(detections, cameras, threshold=20.0, top_n=500)   # detections (frames, joints, views, 2)
    result.frames, result.labels                                         # best frames first, labels in every view
"""

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
           "PCKReport", "Triangulation", "auc", "bootstrap", "evaluate_pck", "flip_permutation", "frame_scores",
           "mean_inlier_error", "mean_pixel_error", "pck", "pck_at", "pck_curve", "person_box", "plot_pck_curve",
           "project_points", "read_keypoint_data", "select_frames", "torso_size", "triangulate_dlt",
           "triangulate_ransac", "undistort_points"]
