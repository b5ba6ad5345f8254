"""Pretrained weights: the catalog of published files, their key maps into our models, download and cache."""

from .catalog import WEIGHTS, WeightSpec
from .hub import fetch, read_weights, weights_dir
from .load import (
    DataConfig,
    create_model,
    data_config,
    find_weights,
    imagenet_classes,
    is_weight_path,
    weight_specs,
)

__all__ = ["WEIGHTS", "DataConfig", "WeightSpec", "create_model", "data_config", "fetch", "find_weights",
           "imagenet_classes", "is_weight_path", "read_weights", "weight_specs", "weights_dir"]
