"""Training: the shared loop (``fit``), recipes, checkpoints, and classification and distillation on top of them."""

from .checkpoint import load_checkpoint, save_checkpoint
from .classify import (
    ClassificationTask,
    EvalResult,
    FineTune,
    RunSetup,
    TrainResult,
    evaluate,
    evaluate_split,
    load_model,
    predict,
    train,
)
from .distill import Distillation, distill
from .loop import BatchSource, Ema, LoopConfig, NonFiniteLoss, fit
from .recipes import RECIPES, Recipe, get_recipe, make_optimizer, make_schedule
from .run import Run
from .specialists import Specialist, SpecialistsResult, specialists

__all__ = [
    "RECIPES",
    "BatchSource",
    "ClassificationTask",
    "Distillation",
    "Ema",
    "FineTune",
    "EvalResult",
    "LoopConfig",
    "NonFiniteLoss",
    "Recipe",
    "Run",
    "RunSetup",
    "Specialist",
    "SpecialistsResult",
    "TrainResult",
    "distill",
    "evaluate",
    "evaluate_split",
    "fit",
    "get_recipe",
    "load_checkpoint",
    "load_model",
    "make_optimizer",
    "make_schedule",
    "predict",
    "save_checkpoint",
    "specialists",
    "train",
]
