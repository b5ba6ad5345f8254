"""The model zoo: importing this package registers every family."""

from . import clcnet, densenet, efficientnet, mobilenet_v1, mobilenet_v3, peleenet, vovnet  # noqa: F401  (registration)
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
