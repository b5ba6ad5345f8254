"""Input geometry for detection: the letterbox (and its inverse for boxes), normalisation, and batched
on-device augmentation (random scale and crop, optional flip, colour jitter) with the boxes following.

A letterbox is stored as a row ``(scale_x, scale_y, pad_x, pad_y)``: an image pixel ``x`` lands at
``x * scale_x + pad_x`` in the network input, so predictions map back by the inverse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.augment import IMAGENET_MEAN, IMAGENET_STD, check_augment, normalize
from ..errors import LightnetsError

# Padding with the mean colour makes it exactly 0 after normalisation, the same as grid_sample's zero padding.
PAD_COLOUR = tuple(round(255 * m) for m in IMAGENET_MEAN)


def letterbox_transform(width: int, height: int, size: int) -> tuple[float, float, float, float]:
    """Scale to fit ``size x size`` keeping the aspect ratio, centered; returns ``(sx, sy, px, py)``.

    The scales are those of the rounded resized image, so the mapping is exact for its pixels.
    """
    if width < 1 or height < 1:
        raise LightnetsError(f"cannot letterbox an image of size {width}x{height}")
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return new_w / width, new_h / height, float((size - new_w) // 2), float((size - new_h) // 2)


def letterbox_image(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """``image`` (H, W, 3) uint8 resized and padded to ``(size, size, 3)``, and the transform used."""
    height, width = image.shape[:2]
    transform = letterbox_transform(width, height, size)
    new_w, new_h = round(width * transform[0]), round(height * transform[1])
    pad_x, pad_y = int(transform[2]), int(transform[3])
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[:] = PAD_COLOUR
    resized = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = np.asarray(resized)
    return canvas, transform


def _box_scale_and_pad(transforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sx, sy, sx, sy)`` and ``(px, py, px, py)`` rows for ``x1, y1, x2, y2`` boxes."""
    rows = transforms.reshape(-1, 4)
    return rows[:, :2].repeat(1, 2), rows[:, 2:].repeat(1, 2)


def to_input_boxes(boxes: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Image-pixel ``x1, y1, x2, y2`` boxes to network-input pixels; ``transforms`` one row per box, or one row."""
    scale, pad = _box_scale_and_pad(transforms)
    return boxes * scale + pad


def to_image_boxes(boxes: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_input_boxes`: network-input boxes back to the original image's pixels."""
    scale, pad = _box_scale_and_pad(transforms)
    return (boxes - pad) / scale


def network_input(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` images on the 0..255 scale (uint8 or float) to the normalised float network input."""
    return normalize(images, IMAGENET_MEAN, IMAGENET_STD, channels_last=False)


@dataclass(frozen=True)
class DetectionAugment:
    """Random zoom (log-uniform in ``scale``) with a random crop or placement on the same canvas,
    horizontal flip with probability ``flip`` (keep 0 for text, whose mirror image is not text) and per-image
    brightness/contrast/saturation jitter of up to the given fractions. A box is kept while at least
    ``min_visible`` of its area stays on the canvas, and clipped to it.
    """

    scale: tuple[float, float] = (0.75, 1.33)
    flip: float = 0.0
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    min_visible: float = 0.5

    def __post_init__(self) -> None:
        check_augment(self)

    def __call__(self, images: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, batch_index: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """uint8 ``(B, 3, H, W)`` images and their boxes -> normalised augmented images, kept boxes, labels, index."""
        batch, _, height, width = images.shape
        device = images.device

        def uniform(low: float, high: float, n: int = batch) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, device=device, generator=generator)

        x = images.float()
        x = x * uniform(1 - self.brightness, 1 + self.brightness).view(-1, 1, 1, 1)
        gray = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = gray + (x - gray) * uniform(1 - self.saturation, 1 + self.saturation).view(-1, 1, 1, 1)
        level = gray.mean((2, 3), keepdim=True)
        x = level + (x - level) * uniform(1 - self.contrast, 1 + self.contrast).view(-1, 1, 1, 1)
        x = network_input(x.clamp(0, 255))

        # Output pixel u comes from input pixel (u - shift) / zoom; the shift keeps the zoomed image on the canvas.
        zoom = torch.exp(uniform(math.log(self.scale[0]), math.log(self.scale[1])))
        extent = torch.tensor([width, height], device=device, dtype=torch.float32)
        spare = extent - zoom.unsqueeze(1) * extent  # < 0 when zoomed in (a crop), > 0 when zoomed out
        shift = torch.minimum(spare, torch.zeros_like(spare)) + spare.abs() * torch.rand(
            batch, 2, device=device, generator=generator)
        flipped = torch.rand(batch, device=device, generator=generator) < self.flip
        sign = 1 - 2 * flipped.float()
        # affine_grid works in [-1, 1] coordinates (align_corners=False): n = 2u / extent - 1.
        theta = torch.zeros(batch, 2, 3, device=device)
        theta[:, 0, 0] = sign / zoom
        theta[:, 1, 1] = 1 / zoom
        theta[:, :, 2] = (1 - 2 * shift / extent) / zoom.unsqueeze(1) - 1
        grid = F.affine_grid(theta, [batch, 3, height, width], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

        index = batch_index.long()
        moved = boxes * zoom[index].unsqueeze(1) + shift[index].repeat(1, 2)
        flip_box = flipped[index]
        mirrored = torch.stack([width - moved[:, 2], moved[:, 1], width - moved[:, 0], moved[:, 3]], dim=1)
        moved = torch.where(flip_box.unsqueeze(1), mirrored, moved)
        clipped = torch.stack([moved[:, 0].clamp(0, width), moved[:, 1].clamp(0, height),
                               moved[:, 2].clamp(0, width), moved[:, 3].clamp(0, height)], dim=1)
        area = (moved[:, 2:] - moved[:, :2]).prod(1)
        visible = (clipped[:, 2:] - clipped[:, :2]).clamp(min=0).prod(1)
        keep = visible >= self.min_visible * area
        return x, clipped[keep], labels[keep], batch_index[keep]
