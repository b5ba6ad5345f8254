"""The 16-joint skeleton every part of lifting uses: joint order, bones (the KCS matrix C) and left/right pairs.

It is Human3.6M's standard 17 joints without ``Spine``, which 2D detectors trained on MPII (Stacked Hourglass)
do not have; RepNet's own code uses the same 16 joints and 15 bones. Joint 0 (``Hip``, the pelvis) is the root.
"""

from __future__ import annotations

import torch

JOINTS = ("Hip", "RHip", "RKnee", "RFoot", "LHip", "LKnee", "LFoot", "Thorax", "Neck", "Head",
          "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow", "RWrist")
ROOT = 0
# (parent, child) joint indices; the order of the columns of C and of the rows of a bone-length table.
BONES = ((0, 1), (1, 2), (2, 3), (0, 4), (4, 5), (5, 6), (0, 7), (7, 8), (8, 9),
         (7, 10), (10, 11), (11, 12), (7, 13), (13, 14), (14, 15))
# (left bone, right bone) indices into BONES: hip, thigh, shin, shoulder, upper arm, forearm.
SYMMETRIC_BONES = ((3, 0), (4, 1), (5, 2), (9, 12), (10, 13), (11, 14))
# Horizontal flips of a pose swap these joints.
LEFT_RIGHT = ((1, 4), (2, 5), (3, 6), (10, 13), (11, 14), (12, 15))

# Human3.6M's 17-joint order (as the 3d-pose-baseline layout stores it) to ours: drop Spine (index 7).
FROM_H36M17 = (0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16)
# MPII's 16-joint order (Stacked Hourglass) to ours: for each of our joints, its MPII index.
# MPII: r_ankle, r_knee, r_hip, l_hip, l_knee, l_ankle, pelvis, thorax, upper_neck, head_top, r_wrist, r_elbow,
# r_shoulder, l_shoulder, l_elbow, l_wrist.
FROM_MPII = (6, 2, 1, 0, 3, 4, 5, 7, 8, 9, 13, 14, 15, 12, 11, 10)


def bone_matrix(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """C (joints × bones): the bone vectors of a pose X (3 × joints) are the columns of X @ C."""
    c = torch.zeros(len(JOINTS), len(BONES), dtype=dtype)
    for b, (parent, child) in enumerate(BONES):
        c[child, b] = 1.0
        c[parent, b] = -1.0
    return c


def bone_lengths(poses: torch.Tensor) -> torch.Tensor:
    """Bone lengths (..., bones) of poses (..., joints, 3)."""
    parents = torch.tensor([p for p, _ in BONES])
    children = torch.tensor([c for _, c in BONES])
    return (poses[..., children, :] - poses[..., parents, :]).norm(dim=-1)


def symmetry_error(poses: torch.Tensor) -> torch.Tensor:
    """Per pose, the mean absolute difference of left and right bone lengths (RepNet's symmetry error)."""
    lengths = bone_lengths(poses)
    left = lengths[..., [left for left, _ in SYMMETRIC_BONES]]
    right = lengths[..., [right for _, right in SYMMETRIC_BONES]]
    return (left - right).abs().mean(dim=-1)
