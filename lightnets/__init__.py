"""lightnets: efficient vision networks on PyTorch, measured honestly on your own hardware."""

from .bench import count, count_params
from .errors import LightnetsError
from .models import create_model, list_models, model_info

__version__ = "0.1.0"

# After __version__: training records the version in every run.
from .data import load_data  # noqa: E402
from .train import distill, evaluate, load_model, predict, specialists, train  # noqa: E402

__all__ = ["LightnetsError", "__version__", "count", "count_params", "create_model", "distill", "evaluate",
           "list_models", "load_data", "load_model", "model_info", "predict", "specialists", "train"]
