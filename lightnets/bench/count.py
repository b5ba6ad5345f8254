"""Parameter and MAC counts, the way the benchmark protocol defines them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Counts:
    params: int
    macs: int
    input_size: tuple[int, int]
    macs_by_module: dict[str, int]


def count_params(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _as_hw(input_size: int | tuple[int, int]) -> tuple[int, int]:
    return (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))


def count(model: nn.Module, input_size: int | tuple[int, int] = 224, in_chans: int | None = None) -> Counts:
    """Parameters and multiply-accumulates of one forward pass of one image at ``input_size``.

    MACs are ``torch.utils.flop_counter`` FLOPs / 2 (convolutions and matrix products; element-wise
    work is not counted, as in the papers). ``macs_by_module`` holds the MACs of every named submodule.
    """
    hw = _as_hw(input_size)
    chans = in_chans if in_chans is not None else getattr(model, "in_chans", 3)
    param = next(model.parameters(), None)
    x = torch.zeros(1, chans, *hw, device=param.device if param is not None else "cpu",
                    dtype=param.dtype if param is not None else torch.float32)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    root = type(model).__name__
    by_module = {}
    for name, ops in counter.get_flop_counts().items():
        key = "" if name in ("Global", root) else name.removeprefix(root + ".")
        by_module[key] = sum(ops.values()) // 2
    return Counts(count_params(model), by_module.get("", 0), hw, by_module)
