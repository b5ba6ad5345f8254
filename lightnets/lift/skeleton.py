"""The 16-joint skeleton every part of lifting uses: joint order, bones (the KCS matrix C) and left/right pairs.

It is Human3.6M's standard 17 joints without ``Spine``, which 2D detectors trained on MPII (Stacked Hourglass)
do not have; RepNet's own code uses the same 16 joints and 15 bones. Joint 0 (``Hip``, the pelvis) is the root.
"""

from __future__ import annotations

import torch

from ..errors import LightnetsError

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

# Other datasets' names for our joints, for keypoint files that name their joints (LSP, MPII, ours). Names are
# compared lower-case with spaces and hyphens as underscores; "r_"/"l_" prefixes read as "right_"/"left_".
_ALIASES = {"Hip": ("hip", "pelvis", "mid_hip", "root"), "Thorax": ("thorax",), "Neck": ("neck", "upper_neck"),
            "Head": ("head", "head_top"), "RFoot": ("right_ankle",), "LFoot": ("left_ankle",)}
# Joints a file may lack, as the midpoint of two it has: LSP has no pelvis or thorax.
_MIDPOINTS = {"Hip": ("RHip", "LHip"), "Thorax": ("RShoulder", "LShoulder")}


def _canonical(name: str) -> str:
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    for short, side in (("r_", "right_"), ("l_", "left_")):
        key = side + key[len(short):] if key.startswith(short) else key
    return key


def _alias_table() -> dict[str, str]:
    table = {}
    for joint in JOINTS:
        names = {joint.lower(), *_ALIASES.get(joint, ())}
        if joint[0] in "RL" and joint[1].isupper():
            names.add(("right_" if joint[0] == "R" else "left_") + joint[1:].lower())
        table.update({_canonical(n): joint for n in names})
    return table


def named_joint_order(names: list[str], source: str) -> list[tuple[int, ...]]:
    """For each of our joints, the indices into ``names`` whose mean it is (one index, or the two a midpoint joins):
    how a file with named joints (LSP's 14, MPII's 16) maps to the lifter's 16. One line naming what is missing."""
    aliases = _alias_table()
    found: dict[str, int] = {}
    for i, name in enumerate(names):
        joint = aliases.get(_canonical(str(name)))
        if joint is not None:
            found.setdefault(joint, i)
    order, missing = [], []
    for joint in JOINTS:
        if joint in found:
            order.append((found[joint],))
        elif joint in _MIDPOINTS and all(j in found for j in _MIDPOINTS[joint]):
            order.append(tuple(found[j] for j in _MIDPOINTS[joint]))
        else:
            missing.append(joint)
    if missing:
        raise LightnetsError(f"{source}: its joints ({', '.join(map(str, names))}) have no {', '.join(missing)}; "
                             f"lifting needs {', '.join(JOINTS)}")
    return order


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


def torso_frame(poses: torch.Tensor) -> torch.Tensor:
    """Poses (..., joints, 3) turned into their own torso's frame: x from the left hip to the right, y down the
    spine (from the thorax towards the pelvis, made orthogonal to x), z their cross product. Every pose then faces
    the same way, as the authors' training poses are "aligned to a template"; the rotation has determinant +1, so
    no pose is mirrored."""
    joint = {name: i for i, name in enumerate(JOINTS)}
    across = poses[..., joint["RHip"], :] - poses[..., joint["LHip"], :]
    x = across / across.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    down = poses[..., joint["Hip"], :] - poses[..., joint["Thorax"], :]
    down = down - (down * x).sum(-1, keepdim=True) * x
    y = down / down.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    rotation = torch.stack([x, y, torch.linalg.cross(x, y)], dim=-2)  # rows: the new axes
    return poses @ rotation.transpose(-1, -2)
