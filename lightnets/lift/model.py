"""RepNet (Wandt and Rosenhahn, CVPR 2019): a 2D-to-3D pose generator, a camera network and a Wasserstein critic
with a kinematic-chain-space (KCS) path, as the paper and the authors' code build them.

Widths and depths follow the authors' code: fully connected layers of 1000 units with leaky ReLU (slope 0.3,
Keras' default, which the code uses) in residual blocks of two layers. Two layouts of the generator and camera
network: the paper's separate networks (each an input layer and ``blocks`` residual blocks), and with
``shared_trunk`` the authors' released code, which they say works better: an input layer and one residual block
shared by both, then ``blocks`` residual blocks each, the pose branch with one more 1000-unit layer before its
output. The critic has a pose path of 100-unit layers and a KCS path of 1000-unit layers on Ψ = BᵀB (B = X C, the
bone vectors), joined by a 100-unit layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .skeleton import JOINTS, bone_matrix

SLOPE = 0.3


class Residual(nn.Module):
    """Two fully connected layers and a skip: act(x + fc(act(fc(x))))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        self.act = nn.LeakyReLU(SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.fc2(self.act(self.fc1(x))))


def _trunk(inputs: int, width: int, blocks: int) -> list[nn.Module]:
    return [nn.Linear(inputs, width), nn.LeakyReLU(SLOPE), *(Residual(width) for _ in range(blocks))]


def _regressor(inputs: int, outputs: int, width: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*_trunk(inputs, width, blocks), nn.Linear(width, outputs))


class Critic(nn.Module):
    """The Wasserstein critic of 3D poses (B, 16, 3): a direct pose path, and with ``kcs`` a path on the KCS
    matrix, whose diagonal holds the squared bone lengths and whose other entries the angles between bones."""

    def __init__(self, kcs: bool = True, pose_width: int = 100, kcs_width: int = 1000) -> None:
        super().__init__()
        n = len(JOINTS)
        self.pose_in = nn.Sequential(nn.Linear(3 * n, pose_width), nn.LeakyReLU(SLOPE))
        self.pose_block = Residual(pose_width)
        self.pose_out = nn.Linear(pose_width, pose_width)
        self.kcs = kcs
        joined = pose_width
        if kcs:
            self.register_buffer("bones", bone_matrix(), persistent=False)
            b = self.bones.shape[1]
            self.kcs_in = nn.Sequential(nn.Linear(b * b, kcs_width), nn.LeakyReLU(SLOPE))
            self.kcs_fc1, self.kcs_fc2 = nn.Linear(kcs_width, kcs_width), nn.Linear(kcs_width, kcs_width)
            joined += kcs_width
        self.head = nn.Sequential(nn.Linear(joined, 100), nn.LeakyReLU(SLOPE), nn.Linear(100, 1))
        self.act = nn.LeakyReLU(SLOPE)

    def forward(self, pose3d: torch.Tensor) -> torch.Tensor:
        features = [self.pose_out(self.pose_block(self.pose_in(pose3d.flatten(1))))]
        if self.kcs:
            bones = pose3d.transpose(1, 2) @ self.bones  # (B, 3, bones)
            psi = (bones.transpose(1, 2) @ bones).flatten(1)
            h = self.kcs_in(psi)
            features.append(h + self.kcs_fc2(self.act(self.kcs_fc1(h))))
        return self.head(torch.cat(features, dim=1)).squeeze(1)


class RepNet(nn.Module):
    """The generator (normalised 2D (B, 16, 2) → 3D (B, 16, 3)), the camera network (→ K, (B, 2, 3)) and the
    critic, in one module so that one checkpoint holds the whole adversarial state."""

    def __init__(self, width: int = 1000, blocks: int = 2, kcs: bool = True, shared_trunk: bool = False) -> None:
        super().__init__()
        n = len(JOINTS)
        self.config = {"width": width, "blocks": blocks, "kcs": kcs, "shared_trunk": shared_trunk}
        if shared_trunk:
            self.trunk = nn.Sequential(*_trunk(2 * n, width, 1))
            self.generator = nn.Sequential(*(Residual(width) for _ in range(blocks)), nn.Linear(width, width),
                                           nn.LeakyReLU(SLOPE), nn.Linear(width, 3 * n))
            self.camera = nn.Sequential(*(Residual(width) for _ in range(blocks)), nn.Linear(width, 6))
        else:
            self.trunk = nn.Identity()
            self.generator = _regressor(2 * n, 3 * n, width, blocks)
            self.camera = _regressor(2 * n, 6, width, blocks)
        self.critic = Critic(kcs)

    def forward(self, pose2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3D pose and the camera K of normalised 2D poses."""
        features = self.trunk(pose2d.flatten(1))
        return self.generator(features).view(-1, len(JOINTS), 3), self.camera(features).view(-1, 2, 3)


def create_lifter(config: dict[str, Any] | None = None) -> RepNet:
    return RepNet(**(config or {}))


def camera_rotation(k: torch.Tensor) -> torch.Tensor:
    """The rotation (B, 3, 3) of a scaled orthographic camera K (B, 2, 3): K's rows made orthonormal (the nearest
    such pair, by SVD), completed by their cross product so that the determinant is +1."""
    u, _, vh = torch.linalg.svd(k, full_matrices=False)
    rows = u @ vh
    return torch.cat([rows, torch.linalg.cross(rows[:, 0], rows[:, 1])[:, None]], dim=1)


def in_camera_frame(pose3d: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The generator's pose (B, 16, 3) turned by its camera's rotation into the camera frame: what the network
    says the camera sees (x, y along the image axes, z the depth)."""
    return pose3d @ camera_rotation(k).transpose(1, 2)
