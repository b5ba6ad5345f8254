"""Blocks shared by the model families."""

from .activations import ACTIVATIONS, get_act
from .blocks import DropPath, InvertedResidual, SqueezeExcite
from .conv import ConvBnAct, DepthwiseSeparable, init_weights, make_divisible
from .dense import BnActConv, DenseBlock, DenseLayer, TwoWayDenseLayer
from .igc import (
    ChannelInterlace,
    CLCBlock,
    InterlacedGroupConv,
    channel_receptive_field,
    check_full_channel_receptive_field,
)
from .osa import OSAModule

__all__ = [
    "ACTIVATIONS",
    "BnActConv",
    "CLCBlock",
    "ChannelInterlace",
    "ConvBnAct",
    "DenseBlock",
    "DenseLayer",
    "DepthwiseSeparable",
    "DropPath",
    "InterlacedGroupConv",
    "InvertedResidual",
    "OSAModule",
    "SqueezeExcite",
    "TwoWayDenseLayer",
    "channel_receptive_field",
    "check_full_channel_receptive_field",
    "get_act",
    "init_weights",
    "make_divisible",
]
