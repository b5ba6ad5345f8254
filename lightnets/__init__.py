"""lightnets: efficient vision networks on PyTorch, measured honestly on your own hardware."""

from ._version import __version__
from .bench import count, count_params
from .data import load_data
from .errors import LightnetsError
from .models import list_models, model_info
from .train import distill, evaluate, load_model, predict, specialists, train
from .weights import create_model, data_config

__all__ = ["LightnetsError", "__version__", "count", "count_params", "create_model", "data_config", "distill",
           "evaluate", "list_models", "load_data", "load_model", "model_info", "predict", "specialists", "train"]
