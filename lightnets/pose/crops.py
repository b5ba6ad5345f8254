"""Person-centred crops for keypoint training: decoded once into a uint8 cache, then augmented in batches on the
model's device.

CPM trains and tests on a crop around the person, its scale from the person's size. Here a record's square
``person_box`` (the labelled joints' extent, widened by ``PERSON_BOX_SCALE``) is the part of the crop the network
sees at scale 1; the cache keeps ``CONTEXT`` times that side around it, so scaling down, rotating and shifting in
the augmentation draws on real image, not padding. Cache pixels outside the photo are its mean colour.

Coordinates follow :mod:`lightnets.pose.heatmaps`: continuous, an image of width ``W`` spanning ``[0, W]``.

    cache = PoseCache(dataset, input_size=128)             # (N, 3, 192, 192) uint8 and the joints in cache px
    images, keypoints, visible = PoseAugment()(cache.images[i], cache.keypoints[i], cache.visible[i], ...)
    in_image = cache.to_image(keypoints_in_crop, i)        # network-crop px -> the original photo's px
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from tqdm import tqdm

from .._io import replace_atomically
from ..data import decode_image
from ..data.augment import check_augment, jitter_colors, normalize, uniform_sampler
from ..data.dataset import cache_dir, load_tensors, source_key
from ..errors import LightnetsError
from .keypoints import KeypointDataset, person_box

CACHE_FORMAT = 1
CONTEXT = 1.5  # cached side / person-box side: room for a 0.7x zoom-out and rotation without padding
FILL = (124, 116, 104)  # outside the photo: ImageNet's mean colour, 0 once normalised


def square_crop(photo: Image.Image, left: int, top: int, side: int, size: int) -> np.ndarray:
    """The ``side`` px square of ``photo`` at ``(left, top)`` (mean colour where it leaves the photo), resized to
    ``size`` px (bilinear, antialiased), as ``(size, size, 3)`` uint8."""
    canvas = Image.new("RGB", (side, side), FILL)
    canvas.paste(photo, (-left, -top))
    return np.array(canvas.resize((size, size), Image.Resampling.BILINEAR))


class PoseCache:
    """``dataset``'s person crops at ``round(input_size * CONTEXT)`` px square, decoded once.

    ``images`` ``(N, 3, S, S)`` uint8; ``keypoints`` ``(N, K, 2)`` in cache px; ``visible`` ``(N, K)``; ``boxes``
    ``(N, 3)`` the cached square in the photo (left, top, side px); ``original`` ``(N, K, 2)`` the photo's joints.
    The network crop of a record is the centre ``input_size`` of its cache at scale 1. With ``cache`` the tensors
    are kept in ``cache_dir()/pose`` and read back on the next construction.
    """

    def __init__(self, dataset: KeypointDataset, input_size: int, cache: bool = True, progress: bool = False) -> None:
        if not isinstance(input_size, int) or input_size < 16:
            raise LightnetsError(f"input_size must be an integer >= 16 px, got {input_size!r}")
        if not len(dataset):
            raise LightnetsError(f"no keypoint records to crop from {dataset.source.path}")
        self.dataset, self.input_size = dataset, input_size
        self.size = round(input_size * CONTEXT)
        key = source_key(dataset.source.path, format=CACHE_FORMAT, size=self.size, context=CONTEXT,
                         records=[(r.image, r.keypoints.round(3).tolist(), r.visible.tolist())
                                  for r in dataset.records])
        self.cache_file = cache_dir() / "pose" / f"{key}.safetensors"
        shape = (len(dataset), 3, self.size, self.size)
        tensors = load_tensors(self.cache_file, lambda t: t["images"].shape == shape) if cache else None
        if tensors is None:
            tensors = self._decode(progress)
            if cache:
                replace_atomically(self.cache_file, lambda tmp: save_file(tensors, str(tmp)))
        self.images, self.keypoints, self.visible = tensors["images"], tensors["keypoints"], tensors["visible"]
        self.boxes, self.original = tensors["boxes"], tensors["original"]

    def _decode(self, progress: bool) -> dict[str, torch.Tensor]:
        records, size = self.dataset.records, self.size
        joints = len(self.dataset.joint_names)
        out = {"images": torch.empty(len(records), 3, size, size, dtype=torch.uint8),
               "keypoints": torch.zeros(len(records), joints, 2), "visible": torch.zeros(len(records), joints,
                                                                                        dtype=torch.bool),
               "boxes": torch.zeros(len(records), 3), "original": torch.zeros(len(records), joints, 2)}
        slots: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            slots.setdefault(record.image, []).append(i)  # COCO: several people per image
        decoded = 0
        with tqdm(total=len(records), disable=not progress, desc="cropping", unit="person") as bar:
            for name, data in self.dataset.source.read_many(list(slots)):
                try:
                    photo = Image.fromarray(decode_image(data, None))
                except Exception as err:  # Pillow raises many types for a damaged file
                    raise LightnetsError(f"cannot decode image {name!r} in {self.dataset.source.path}: "
                                         f"{err}") from None
                for i in slots[name]:
                    record = records[i]
                    cx, cy, side = person_box(record.keypoints, record.visible)
                    crop_side = max(int(math.ceil(side * CONTEXT)), 2)
                    left, top = int(round(cx - crop_side / 2)), int(round(cy - crop_side / 2))
                    out["images"][i] = torch.from_numpy(square_crop(photo, left, top, crop_side, size)).permute(2, 0, 1)
                    points = torch.from_numpy(record.keypoints.astype(np.float32))
                    out["keypoints"][i] = (points - torch.tensor([left, top])) * (size / crop_side)
                    out["visible"][i] = torch.from_numpy(record.visible)
                    out["boxes"][i] = torch.tensor([left, top, crop_side], dtype=torch.float32)
                    out["original"][i] = points
                    decoded += 1
                    bar.update()
        if decoded != len(records):  # never leave a slot of torch.empty to be trained on
            raise LightnetsError(f"read only {decoded} of the {len(records)} records' images from "
                                 f"{self.dataset.source.path}")
        return out

    @classmethod
    def join(cls, caches: Sequence[PoseCache]) -> PoseCache:
        """One cache of several of the same crop size (labelled data and added labels, trained on together); it has
        no single ``dataset``."""
        if len({c.input_size for c in caches}) != 1 or len({c.keypoints.shape[1] for c in caches}) != 1:
            raise LightnetsError("caches to join need the same crop size and the same joints")
        joined = cls.__new__(cls)
        joined.dataset, joined.cache_file = None, None
        joined.input_size, joined.size = caches[0].input_size, caches[0].size
        for name in ("images", "keypoints", "visible", "boxes", "original"):
            setattr(joined, name, torch.cat([getattr(c, name).cpu() for c in caches]))
        return joined

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device: torch.device | str) -> PoseCache:
        for name in ("images", "keypoints", "visible"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def to_image(self, crop_keypoints: torch.Tensor, indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Keypoints ``(B, K, 2)`` in the unaugmented network crop of records ``indices`` -> the photo's px."""
        boxes = self.boxes[torch.as_tensor(indices, dtype=torch.long)].to(crop_keypoints.device)
        margin = (self.size - self.input_size) / 2
        cache_px = crop_keypoints.float() + margin
        return boxes[:, None, :2] + cache_px * (boxes[:, None, 2:] / self.size)


@dataclass(frozen=True)
class PoseAugment:
    """CPM's augmentation as one affine resampling per image: zoom uniform in ``scale``, rotation uniform in
    ``±rotation`` degrees, a shift of up to ``shift`` of the crop side on each axis, a horizontal flip with
    probability ``flip`` (left and right joints swapped), and brightness, contrast and saturation jitter."""

    scale: tuple[float, float] = (0.7, 1.3)
    rotation: float = 40.0
    shift: float = 0.05
    flip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self) -> None:
        check_augment(self)
        if not 0 <= self.rotation <= 180 or not 0 <= self.shift < 1:
            raise LightnetsError(f"pose augmentation rotation must be in [0, 180] degrees and shift in [0, 1), got "
                                 f"{self.rotation!r} and {self.shift!r}")


IDENTITY = PoseAugment(scale=(1.0, 1.0), rotation=0.0, shift=0.0, flip=0.0, brightness=0.0, contrast=0.0,
                       saturation=0.0)


def _sample(images: torch.Tensor, input_size: int, mean: Sequence[float], std: Sequence[float],
            augment: PoseAugment, generator: torch.Generator | None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The normalised crops and their geometry: crop point ``p`` (centred, ``p - input_size / 2``) shows cache point
    ``centre + matrix p``; ``flipped`` marks the mirrored ones."""
    batch, _, size, _ = images.shape
    device = images.device
    uniform = uniform_sampler(batch, device, generator)

    zoom = uniform(*augment.scale)
    angle = uniform(-augment.rotation, augment.rotation) * (math.pi / 180)
    flipped = uniform(0, 1) < augment.flip
    centre = size / 2 + uniform(-augment.shift, augment.shift, batch, 2) * (size / CONTEXT)
    # One cache px per crop px at zoom 1 (the person box, size / CONTEXT, is then the crop to within a pixel).
    cos, sin = angle.cos(), angle.sin()
    mirror = 1 - 2 * flipped.float()
    matrix = torch.stack([torch.stack([cos * mirror, -sin], -1), torch.stack([sin * mirror, cos], -1)], -2)
    matrix = matrix / zoom.view(-1, 1, 1)
    theta = torch.cat([matrix * (input_size / size), (2 * centre / size - 1).unsqueeze(-1)], dim=-1)
    grid = F.affine_grid(theta, [batch, 3, input_size, input_size], align_corners=False)
    x = jitter_colors(images.float(), augment.brightness, augment.contrast, augment.saturation, uniform)
    x = F.grid_sample(normalize(x, list(mean), list(std), channels_last=False), grid, mode="bilinear",
                      padding_mode="zeros", align_corners=False)
    return x, matrix, centre, flipped


def centre_crops(images: torch.Tensor, input_size: int, mean: Sequence[float], std: Sequence[float],
                 zoom: float = 1.0) -> torch.Tensor:
    """The normalised unaugmented network input of cached crops: their centre ``input_size`` at scale 1, what
    evaluation sees and :meth:`PoseCache.to_image` maps back from; ``zoom`` > 1 magnifies it about the centre
    (crop point ``p`` then shows what ``p / zoom`` shows at scale 1), for multi-scale testing."""
    augment = IDENTITY if zoom == 1 else dataclasses.replace(IDENTITY, scale=(zoom, zoom))
    return _sample(images, input_size, mean, std, augment, None)[0]


def crop_batch(images: torch.Tensor, keypoints: torch.Tensor, visible: torch.Tensor, input_size: int,
               mean: Sequence[float], std: Sequence[float], flip_perm: Sequence[int],
               augment: PoseAugment = IDENTITY, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cached crops ``(B, 3, S, S)`` uint8 with their joints ``(B, K, 2)`` in cache px -> the normalised network
    input ``(B, 3, input_size, input_size)`` and the joints moved with it (flipped ones swapped left for right,
    ``flip_perm`` as ``flip_permutation`` gives). A joint the augmentation moves out of the crop stays labelled:
    its target says it is not there.
    """
    x, matrix, centre, flipped = _sample(images, input_size, mean, std, augment, generator)
    # Joints go the other way: p = A^-1 (q - centre), then back to corner-based crop px.
    moved = torch.linalg.solve(matrix, (keypoints.float() - centre.unsqueeze(1)).transpose(1, 2)).transpose(1, 2)
    moved = moved + input_size / 2
    # The mirror is already in A; what is left of a flip is the left/right relabelling.
    perm = torch.as_tensor(list(flip_perm), dtype=torch.long, device=images.device)
    keep = flipped.view(-1, 1)
    return (x, torch.where(keep.unsqueeze(-1), moved[:, perm], moved),
            torch.where(keep, visible.bool()[:, perm], visible.bool()))
