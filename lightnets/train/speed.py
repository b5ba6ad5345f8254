"""How every training command settles precision, layout and threads before its run starts.

A recipe's ``amp`` and ``channels_last`` may be ``"auto"`` (the default) and the run's thread count None (not
given): then ``lightnets.bench.probe.choose_speed`` measures the candidates on this machine (or reuses its
cached answer). The recipe that comes back holds the concrete values, so config.json, every checkpoint and a
resumed run carry what was measured; a resumed run reuses its recorded choice without probing again.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..bench.probe import SpeedChoice, choose_speed
from ..models.base import set_frozen_amp
from .loop import rank_and_world
from .recipes import Recipe


def settle_speed(model: nn.Module, rec: Recipe, input_shape: tuple[int, ...], device: torch.device, *,
                 threads: int | None = None, cache_key: dict[str, Any] | None = None,
                 recorded: dict[str, Any] | None = None, progress: bool = True) -> tuple[Recipe, SpeedChoice]:
    """The recipe with concrete ``amp`` and ``channels_last``, and the choice (threads included) to run with;
    ``model`` is set to compute its frozen stages in the chosen precision.

    ``recorded`` is a resumed run's choice, reused as it is except for an explicitly given ``threads``. Under
    DDP the first process probes and the others take its answer, so that all run alike.
    """
    rank, world = rank_and_world()
    if recorded is not None:
        choice = SpeedChoice.from_dict(recorded)
        choice.how = "recorded"
        choice.threads = threads if threads is not None else choice.threads
    else:
        choice = None
        if rank == 0:
            per_process = rec.batch_size // world
            choice = choose_speed(model, input_shape, per_process, device, amp=rec.amp,
                                  channels_last=rec.channels_last, threads=threads, processes=world,
                                  cache_key=cache_key)
        if world > 1:
            shared = [choice.to_dict() if choice else None]
            dist.broadcast_object_list(shared)
            choice = SpeedChoice.from_dict(shared[0])
    assert choice is not None
    if progress and rank == 0:
        print(choice.line(), file=sys.stderr)
    set_frozen_amp(model, choice.amp)
    settled = rec.replace(amp=choice.amp or "none", channels_last=choice.channels_last)
    return settled, choice

