"""Batched segmentation augmentation as tensor ops on the images' device: per image a random rescale, crop
position and horizontal flip, done as one affine resampling so the mask follows the image exactly, and colour
jitter. Everything random comes from one ``torch.Generator``, so a batch's augmentation is a function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.augment import check_augment, jitter_colors, normalize, uniform_sampler
from ..errors import LightnetsError
from .metrics import IGNORE


def normalize_images(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` to the normalised float network input, for evaluation and inference."""
    return normalize(images, mean, std, channels_last=False)


@dataclass(frozen=True)
class SegmentationAugment:
    """Random rescale (uniform in ``scale``) then a random ``crop`` (H, W; None: the input size) of the rescaled
    image, padded where it is smaller, a horizontal flip with probability ``flip``, and per-image brightness,
    contrast and saturation factors uniform in ``[1 - x, 1 + x]``. Padding is the mean colour (0 once normalised)
    in the image and the ignore label in the mask."""

    scale: tuple[float, float] = (0.5, 2.0)
    crop: tuple[int, int] | None = None
    flip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self) -> None:
        check_augment(self)
        if self.crop is not None and (len(self.crop) != 2 or not all(int(v) == v >= 1 for v in self.crop)):
            raise LightnetsError(f"crop must be (height, width) in whole pixels, got {self.crop!r}")

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, mean: list[float], std: list[float],
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images ``(B, 3, H, W)`` and masks ``(B, H, W)`` -> normalised float images ``(B, 3, h, w)`` and
        int64 masks ``(B, h, w)`` (ignore 255)."""
        batch, _, height, width = images.shape
        if masks.shape != (batch, height, width):
            raise LightnetsError(f"masks {tuple(masks.shape)} do not match images {tuple(images.shape)}")
        out_h, out_w = self.crop or (height, width)
        device = images.device
        uniform = uniform_sampler(batch, device, generator)

        zoom = uniform(*self.scale)
        # The crop's top-left corner in the rescaled image: inside it when it is larger, else it is placed inside
        # the crop (negative offsets), anywhere in between with equal chance.
        spare = torch.stack([height * zoom - out_h, width * zoom - out_w], dim=1)
        offset = torch.minimum(spare, torch.zeros_like(spare)) + spare.abs() * uniform(0, 1, batch, 2)
        flipped = (uniform(0, 1) < self.flip).float()

        jittered = jitter_colors(images.float(), self.brightness, self.contrast, self.saturation, uniform)
        x = normalize(jittered, mean, std, channels_last=False)
        # Output pixel u (centre u + 0.5) samples the rescaled image at u + 0.5 + offset (mirrored when flipped),
        # the source at that / zoom; affine_grid maps n = 2u / size - 1 of the output to that of the source.
        sign = 1 - 2 * flipped
        theta = torch.zeros(batch, 2, 3, device=device)
        theta[:, 0, 0] = sign * out_w / (zoom * width)
        theta[:, 0, 2] = sign * (out_w + 2 * offset[:, 1]) / (zoom * width) + 2 * flipped - 1
        theta[:, 1, 1] = out_h / (zoom * height)
        theta[:, 1, 2] = (out_h + 2 * offset[:, 0]) / (zoom * height) - 1
        grid = F.affine_grid(theta, [batch, 3, out_h, out_w], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # The mask is sampled shifted by one, so the zero padding (0) stands out from every label.
        shifted = F.grid_sample(masks.unsqueeze(1).float() + 1, grid, mode="nearest", padding_mode="zeros",
                                align_corners=False).squeeze(1).round().long()
        return x, torch.where(shifted > 0, shifted - 1, torch.full_like(shifted, IGNORE))
