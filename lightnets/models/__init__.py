"""The model zoo: importing this package registers every family."""

from . import efficientnet, mobilenet_v1, mobilenet_v3  # noqa: F401  (registration side effects)
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
