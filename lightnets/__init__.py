"""lightnets: efficient vision networks on PyTorch, measured honestly on your own hardware."""

from .bench import count, count_params
from .errors import LightnetsError
from .models import create_model, list_models, model_info

__version__ = "0.1.0"

__all__ = ["LightnetsError", "__version__", "count", "count_params", "create_model", "list_models", "model_info"]
