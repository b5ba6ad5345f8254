"""The model zoo: importing this package registers every family."""

from . import (  # noqa: F401  (registration)
    clcnet,
    densenet,
    efficientnet,
    mnas_space,
    mobilenet_v1,
    mobilenet_v3,
    peleenet,
    vovnet,
)
from .base import FeatureInfo, LightNet
from .registry import ModelEntry, Published, create_model, list_models, model_info, register_model

__all__ = [
    "FeatureInfo",
    "LightNet",
    "ModelEntry",
    "Published",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
]
