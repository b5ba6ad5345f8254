"""2D-to-3D human pose lifting: RepNet (adversarial, reprojection and camera losses, KCS critic) on Human3.6M.

    result = train_lifter("h36m.npz", inputs="sh", budget_min=30)     # through lightnets.train's loop
    evaluate_lifter(result.run_dir, "h36m.npz")     # MPJPE P1/P2 per action, 3DPCK, AUC, symmetry error
    predict_keypoints(result.run_dir, "keypoints.json", "poses3d.json")   # and poses3d.png beside it
"""

from .cameras import Camera
from .data import PoseSet, normalize_2d, read_h36m, read_keypoints
from .infer import evaluate_lifter, load_lifter, plot_poses, predict_keypoints
from .metrics import joint_errors, lifting_metrics, procrustes_aligned
from .model import Critic, RepNet, camera_rotation, create_lifter, in_camera_frame
from .skeleton import BONES, JOINTS, SYMMETRIC_BONES, bone_lengths, bone_matrix, symmetry_error
from .train import LIFT_RECIPE, LiftBatches, LiftTask, lift, train_lifter

__all__ = ["BONES", "JOINTS", "LIFT_RECIPE", "SYMMETRIC_BONES", "Camera", "Critic", "LiftBatches", "LiftTask",
           "PoseSet", "RepNet", "bone_lengths", "bone_matrix", "camera_rotation", "create_lifter", "evaluate_lifter",
           "in_camera_frame", "joint_errors", "lift", "lifting_metrics", "load_lifter", "normalize_2d", "plot_poses",
           "predict_keypoints", "procrustes_aligned", "read_h36m", "read_keypoints", "symmetry_error",
           "train_lifter"]
