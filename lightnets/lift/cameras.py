"""Human3.6M's camera model: world to camera frame, and the radial + tangential projection to pixels.

The projection is the one Human3.6M's own tools use (3d-pose-baseline's ``project_point_radial``), which is not
OpenCV's Brown–Conrady form; the two differ by under a pixel on these cameras.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import LightnetsError


@dataclass(frozen=True)
class Camera:
    """``R`` (3×3, world to camera, as used for projection), ``T`` (camera centre in world, mm), focal ``f`` and
    principal point ``c`` (px), radial ``k`` (k1..k3) and tangential ``p`` (p1, p2)."""

    R: np.ndarray
    T: np.ndarray
    f: np.ndarray
    c: np.ndarray
    k: np.ndarray
    p: np.ndarray

    def __post_init__(self) -> None:
        shapes = {"R": (3, 3), "T": (3,), "f": (2,), "c": (2,), "k": (3,), "p": (2,)}
        for name, shape in shapes.items():
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != shape or not np.isfinite(value).all():
                raise LightnetsError(f"camera parameter {name} must be {shape} and finite, got shape {value.shape}")
            object.__setattr__(self, name, value)
        if abs(np.linalg.det(self.R)) < 1e-6 or (self.f == 0).any():
            raise LightnetsError("camera has a singular rotation or a zero focal length")

    def to_camera(self, world: np.ndarray) -> np.ndarray:
        """World points (..., 3) in the camera frame (x right, y down, z forward), same unit."""
        return (world - self.T) @ self.R.T

    def project(self, world: np.ndarray) -> np.ndarray:
        """World points (..., 3) to pixels (..., 2), with the lens distortion."""
        cam = self.to_camera(world)
        x, y = cam[..., 0] / cam[..., 2], cam[..., 1] / cam[..., 2]
        r2 = x * x + y * y
        radial = 1 + self.k[0] * r2 + self.k[1] * r2**2 + self.k[2] * r2**3
        tangential = self.p[0] * y + self.p[1] * x
        xd = x * (radial + tangential) + self.p[1] * r2
        yd = y * (radial + tangential) + self.p[0] * r2
        return np.stack([self.f[0] * xd + self.c[0], self.f[1] * yd + self.c[1]], axis=-1)
