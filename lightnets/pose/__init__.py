"""Keypoints: multiview triangulation and bootstrapping of new labels from calibrated views (Simon et al. 2017).

    result = bootstrap(detections, cameras, threshold=20.0, top_n=500)   # detections (frames, joints, views, 2)
    result.frames, result.labels                                         # best frames first, labels in every view
"""

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

__all__ = ["Bootstrap", "Triangulation", "bootstrap", "frame_scores", "mean_inlier_error", "project_points",
           "select_frames", "triangulate_dlt", "triangulate_ransac", "undistort_points"]
