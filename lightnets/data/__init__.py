"""Data: CIFAR-10 (official release), image folders (directory, .tar, .tar.gz), a uint8 cache, on-device batches."""

from .augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augment,
    cutout,
    normalize,
    random_crop,
    random_flip,
    random_resized_crop,
)
from .cifar import CIFAR10_MD5, read_cifar10
from .dataset import Dataset, Split, cache_dir
from .folder import decode_image, read_image_folder
from .loader import ImageBatches, eval_batches
from .sources import SAMPLE, load_data

__all__ = [
    "CIFAR10_MD5",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SAMPLE",
    "Augment",
    "Dataset",
    "ImageBatches",
    "Split",
    "cache_dir",
    "cutout",
    "decode_image",
    "eval_batches",
    "load_data",
    "normalize",
    "random_crop",
    "random_flip",
    "random_resized_crop",
    "read_cifar10",
    "read_image_folder",
]
