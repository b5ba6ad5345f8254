"""Blocks shared by the model families."""

from .activations import ACTIVATIONS, get_act
from .blocks import DropPath, InvertedResidual, SqueezeExcite
from .conv import Conv2dTFSame, ConvBnAct, DepthwiseSeparable, init_weights, make_divisible, tf_same_pad
from .dense import BnActConv, DenseBlock, DenseLayer, TwoWayDenseLayer
from .igc import (
    ChannelInterlace,
    CLCBlock,
    InterlacedGroupConv,
    channel_receptive_field,
    check_full_channel_receptive_field,
)
from .osa import EffectiveSqueezeExcite, OSAModule

__all__ = [
    "ACTIVATIONS",
    "BnActConv",
    "CLCBlock",
    "ChannelInterlace",
    "Conv2dTFSame",
    "ConvBnAct",
    "DenseBlock",
    "DenseLayer",
    "DepthwiseSeparable",
    "DropPath",
    "EffectiveSqueezeExcite",
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
    "tf_same_pad",
]
