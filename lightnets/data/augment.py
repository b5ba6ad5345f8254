"""Batched augmentation as tensor ops on the model's device, so the data never sets the pace.

Every function takes a whole batch ``(N, C, H, W)`` and a ``torch.Generator`` on the same device,
which makes an epoch's augmentation a pure function of its seed (exact resume). The geometric ops
run on the uint8 images before normalisation, where moving pixels is cheapest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import LightnetsError

# The ImageNet channel statistics that ImageNet-pretrained networks (and the detector's backbones) expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor, mean: list[float], std: list[float], channels_last: bool = True) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` to float32, scaled to 0..1 and standardised per channel."""
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    x = (images.float() / 255 - m) / s
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def uniform_sampler(batch: int, device: torch.device, generator: torch.Generator | None
                    ) -> Callable[..., torch.Tensor]:
    """``uniform(low, high, *shape)``: draws on ``generator``'s device (shape ``(batch,)`` by default), moved to
    ``device``, so an augmentation is the same function of its seed wherever its images are."""
    draw_on = generator.device if generator is not None else device

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        u = torch.rand(*(shape or (batch,)), generator=generator, device=draw_on).to(device)
        return low + (high - low) * u

    return uniform


def check_augment(augment: object, jitters: tuple[str, ...] = ("brightness", "contrast", "saturation")) -> None:
    """The checks every batched augmentation shares: ``scale`` a range ``0 < low <= high``, ``flip`` a probability
    and each jitter fraction in ``[0, 1)``; the first bad field is one error naming it."""
    low, high = augment.scale
    if not 0 < low <= high:
        raise LightnetsError(f"augmentation scale must be a range 0 < low <= high, got {augment.scale!r}")
    if not 0 <= augment.flip <= 1:
        raise LightnetsError(f"flip probability must be in [0, 1], got {augment.flip!r}")
    for name in jitters:
        if not 0 <= getattr(augment, name) < 1:
            raise LightnetsError(f"{name} jitter must be in [0, 1), got {getattr(augment, name)!r}")


def jitter_colors(x: torch.Tensor, brightness: float, contrast: float, saturation: float,
                  uniform: Callable[[float, float], torch.Tensor]) -> torch.Tensor:
    """Per-image brightness, saturation and contrast factors ``uniform(1 - j, 1 + j)`` (``(B,)`` each) on float
    RGB ``(B, 3, H, W)`` on the 0..255 scale, clamped back to it; a jitter of 0 is skipped and draws nothing."""
    shape = (-1, 1, 1, 1)
    if brightness:
        x = x * uniform(1 - brightness, 1 + brightness).view(shape)
    if saturation:
        gray = luma(x)
        x = gray + (x - gray) * uniform(1 - saturation, 1 + saturation).view(shape)
    if contrast:
        level = luma(x).mean((2, 3), keepdim=True)
        x = level + (x - level) * uniform(1 - contrast, 1 + contrast).view(shape)
    return x.clamp(0, 255)


def luma(x: torch.Tensor) -> torch.Tensor:
    """The grey level ``(B, 1, H, W)`` of RGB ``x`` (ITU-R BT.601 weights)."""
    return (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _reflect(idx: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror out-of-range indices back inside ``[0, size)`` (reflect padding without padding)."""
    idx = idx.abs()
    return (size - 1) - ((size - 1) - idx).abs()


def random_crop(x: torch.Tensor, pad: int, g: torch.Generator, flip: bool = False) -> torch.Tensor:
    """A random crop of the original size from the image reflect-padded by ``pad``; with ``flip``, half mirrored.

    One gather does both, on any dtype (uint8 is 4x cheaper to move than float), and its result
    is already channels_last.
    """
    n, _, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=g)
    rows = _reflect(dy - pad + torch.arange(h, device=x.device), h)[:, :, None]
    cols = _reflect(dx - pad + torch.arange(w, device=x.device), w)
    if flip:
        mirrored = torch.rand(n, 1, device=x.device, generator=g) < 0.5
        cols = torch.where(mirrored, cols.flip(1), cols)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indexing on dims 0, 2, 3 yields (N, H, W, C); permuting back gives channels_last for free.
    return x[batch, :, rows, cols[:, None, :]].permute(0, 3, 1, 2)


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Mirror half of the images left to right."""
    flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=g) < 0.5
    return torch.where(flip, x.flip(3), x)


def cutout(x: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square at a random centre per image (clipped at the borders)."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n, 1, 1, 1), device=x.device, generator=g)
    cx = torch.randint(0, w, (n, 1, 1, 1), device=x.device, generator=g)
    ys = torch.arange(h, device=x.device).view(1, 1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, 1, w)
    inside = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    if size % 2 == 0:
        inside &= (ys - cy < size // 2) & (xs - cx < size // 2)
    return x.masked_fill(inside, 0.0)


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float], g: torch.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio`` and resize it to the input size."""
    n = x.shape[0]
    area = torch.empty(n, device=x.device).uniform_(scale[0], scale[1], generator=g)
    log_r = torch.empty(n, device=x.device).uniform_(*torch.tensor(ratio).log().tolist(), generator=g)
    r = log_r.exp()
    sw = (area * r).sqrt().clamp(max=1.0)
    sh = (area / r).sqrt().clamp(max=1.0)
    tx = (torch.rand(n, device=x.device, generator=g) * 2 - 1) * (1 - sw)
    ty = (torch.rand(n, device=x.device, generator=g) * 2 - 1) * (1 - sh)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sw, tx, sh, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@dataclass
class Augment:
    """The training augmentation; the default is the 'standard' one: crop with padding 4 and horizontal flip.

    ``rrc_scale`` switches the crop to random-resized-crop (for large images); ``cutout`` > 0 adds
    cutout (filled with the mean, after normalisation). Takes uint8 batches, returns normalised float.
    """

    crop_pad: int = 4
    flip: bool = True
    cutout: int = 0
    rrc_scale: tuple[float, float] | None = None

    def __call__(self, images: torch.Tensor, mean: list[float], std: list[float], g: torch.Generator,
                 channels_last: bool = True) -> torch.Tensor:
        if self.rrc_scale is not None:
            x = random_resized_crop(normalize(images, mean, std, channels_last), self.rrc_scale, g)
            x = random_flip(x, g) if self.flip else x
        elif self.crop_pad > 0:
            x = normalize(random_crop(images, self.crop_pad, g, self.flip), mean, std, channels_last)
        else:
            x = normalize(random_flip(images, g) if self.flip else images, mean, std, channels_last)
        if self.cutout > 0:
            x = cutout(x, self.cutout, g)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
