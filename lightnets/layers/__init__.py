"""Blocks shared by the model families."""

from .activations import ACTIVATIONS, get_act
from .blocks import DropPath, InvertedResidual, SqueezeExcite
from .conv import ConvBnAct, DepthwiseSeparable, init_weights, make_divisible

__all__ = [
    "ACTIVATIONS",
    "ConvBnAct",
    "DepthwiseSeparable",
    "DropPath",
    "InvertedResidual",
    "SqueezeExcite",
    "get_act",
    "init_weights",
    "make_divisible",
]
