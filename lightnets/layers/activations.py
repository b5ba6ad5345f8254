"""Activations of the mobile networks, resolved by name so block tables can say 'hswish'."""

from __future__ import annotations

from torch import nn

from ..errors import LightnetsError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hswish": nn.Hardswish,  # x * relu6(x + 3) / 6, MobileNetV3's cheap swish
    "hsigmoid": nn.Hardsigmoid,  # relu6(x + 3) / 6
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def get_act(name: str) -> type[nn.Module]:
    """The activation class registered as ``name``; a clear error lists the known names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise LightnetsError(f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}") from None
