"""The one training loop: every task (classification, detection, distillation) runs through ``fit``.

The contract, so a new task needs no loop of its own:

- ``task(model, batch) -> (loss, metrics)``: turns one batch into a scalar loss and a dict of scalar
  tensors to average over the epoch (``{"acc": ...}``). It runs under autocast; ``model`` is the
  DistributedDataParallel wrapper when training on several processes. Distillation is a task that
  also holds a teacher; detection is a task whose loss is focal + size + offset.
- ``batches``: a ``BatchSource`` with ``batch_size`` (samples per optimizer step over all
  processes), ``steps_per_epoch`` and ``epoch(e)``, an iterable of this process's batches for epoch
  ``e``. Its shuffling and augmentation must be a function of ``e`` alone: that, plus the global RNG
  being reseeded at each epoch start, is what makes ``resume`` exact.
- ``evaluate(model) -> dict``: called after every epoch with the weights to judge (the EMA copy when
  EMA is on); its ``monitor`` key (higher is better) picks the ``best`` checkpoint.
- ``meta``: what the task wants in every checkpoint's JSON (model name and arguments, class names,
  normalisation, recipe); the loop adds the epoch and the metrics.

The loop owns the rest: autocast (bf16 on CPU, bf16/fp16 on CUDA), the LR schedule, EMA, DDP,
a non-finite-loss stop naming the epoch and step, ``metrics.jsonl``, atomic checkpoints
(``last``, ``best``, ``state``; written only when every weight, buffer and optimizer tensor is finite, so the
checkpoint a divergence message calls good is), exact resume and a tqdm progress bar.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .._io import JsonLog
from ..errors import LightnetsError
from ..models.base import autocast_for
from .checkpoint import first_non_finite, load_optimizer, load_state, optimizer_tensors, save_checkpoint, save_state

METRICS = "metrics.jsonl"
Task = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, torch.Tensor]]]
Evaluate = Callable[[nn.Module], dict[str, float]]


class BatchSource(Protocol):
    batch_size: int
    steps_per_epoch: int

    def epoch(self, epoch: int) -> Iterable[Any]: ...


class NonFiniteLoss(LightnetsError):
    """Training diverged (a non-finite loss, or weights, batch-norm statistics or optimizer state that are); the
    message names where, and the last good checkpoint."""


@dataclass
class LoopConfig:
    """How to run the loop (the task's hyperparameters live in its recipe)."""

    epochs: int
    amp: str | None = None  # None, "bf16", "fp16" (CUDA only) or "bf16-frozen" (see models.base.autocast_for)
    ema: float = 0.0  # EMA decay per step; 0 turns it off
    grad_clip: float | None = None
    time_budget: float | None = None  # seconds of training on the budget clock (see fit); stops early
    monitor: str = "val_top1"
    seed: int = 0
    progress: bool = True


class Ema:
    """An exponential moving average of a model's parameters and buffers, kept as a full copy of it."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # Warm-up: a short memory at first, so early random weights fade quickly.
        d = min(self.decay, (1 + step) / (10 + step))
        ema = self.module.state_dict()
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                ema[k].lerp_(v, 1 - d)
            else:
                ema[k].copy_(v)


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    if rank_and_world()[1] > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def _max_over_processes(value: float) -> float:
    """The largest ``value`` of all processes, so that time-based decisions agree everywhere."""
    if rank_and_world()[1] > 1:
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        value = float(t)
    return value


def _diverged(what: str, run_dir: Path, epoch: int) -> NonFiniteLoss:
    """The divergence error: ``what`` happened in (0-based) ``epoch``, whose predecessor wrote the last checkpoint."""
    last = f"{run_dir / 'last'} (epoch {epoch})" if epoch > 0 else "none (it failed in the first epoch)"
    return NonFiniteLoss(f"{what}; the last good checkpoint is {last}. Lower --lr, add --warmup or --grad-clip")


def _first_non_finite(model: nn.Module, ema: Ema | None, optimizer: torch.optim.Optimizer) -> str | None:
    """The name of the first weight, buffer (batch-norm statistics) or optimizer tensor holding inf or NaN, or None:
    a finite loss does not make them finite, and a checkpoint holding one is no good."""
    named = [(f"weight or buffer {k}", v) for k, v in model.state_dict().items()]
    named += [(f"EMA weight or buffer {k}", v) for k, v in (ema.module.state_dict().items() if ema else [])]
    named += [(f"optimizer {name} of parameter {i}", v) for i, state in enumerate(optimizer.state.values())
              for name, v in state.items() if isinstance(v, torch.Tensor)]
    return first_non_finite(named)


def fit(model: nn.Module, task: Task, batches: BatchSource, optimizer: torch.optim.Optimizer,
        schedule: Callable[[float], float], config: LoopConfig, run_dir: str | Path, *,
        evaluate: Evaluate | None = None, meta: dict[str, Any] | None = None, resume: bool = False) -> list[dict]:
    """Train ``model`` for ``config.epochs`` epochs; returns one metrics record per epoch.

    ``schedule(progress)`` gives the LR multiplier at ``progress`` in [0, 1) of all steps; every
    param group's LR is its ``initial_lr`` times it. With ``config.time_budget`` progress is the
    larger of the step and the time fractions, and training stops (mid-epoch if need be) when the
    budget is spent: the schedule completes whatever the machine's speed, at the cost of bit-exact
    reproducibility. On a CPU the budget clock is this process's CPU time divided by its thread
    count (wall time on an unshared machine, unaffected by other work sharing the cores); on an
    accelerator it is wall time. Evaluation is not counted. With ``resume`` the run continues from
    ``run_dir/state.safetensors`` and (without a time budget) ends with the weights an uninterrupted
    run would have.
    """
    run_dir = Path(run_dir)
    rank, world = rank_and_world()
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    meta = dict(meta or {})
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    ema = Ema(model, config.ema) if config.ema > 0 else None
    scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
    total_steps = config.epochs * batches.steps_per_epoch
    start_epoch, step, best, elapsed, used, history = 0, 0, -math.inf, 0.0, 0.0, []
    if resume:
        tensors, info = load_state(run_dir / "state.safetensors")
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if ema is not None:
            ema.module.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        load_optimizer(optimizer, tensors, info["optimizer"])
        start_epoch, step, best, elapsed, used = (info[k] for k in ("epoch", "step", "best", "elapsed", "used"))
        log = JsonLog(run_dir / METRICS)
        history = log.keep(r for r in log.read() if r["epoch"] <= start_epoch)  # later lines: a crash
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    show = config.progress and rank == 0

    budget = config.time_budget or math.inf
    threads = torch.get_num_threads()

    def clock() -> float:
        return time.process_time() / threads if device.type == "cpu" else time.perf_counter()

    for epoch in range(start_epoch, config.epochs):
        if used >= budget:
            break
        torch.manual_seed(config.seed * 1_000_003 + epoch * 7919 + rank)
        net.train()
        sums: dict[str, torch.Tensor] = {}
        t0, c0 = time.perf_counter(), clock()
        bar = tqdm(batches.epoch(epoch), total=batches.steps_per_epoch, disable=not show, leave=True,
                   desc=f"epoch {epoch + 1}/{config.epochs}", dynamic_ncols=True)
        steps, data_time, t_data = 0, 0.0, time.perf_counter()
        for i, batch in enumerate(bar):
            data_time += time.perf_counter() - t_data  # the batch source prepares batches lazily, in this pull
            spent = _max_over_processes(used + clock() - c0) / budget if budget < math.inf else 0.0
            if spent >= 1 and steps > 0:
                break
            lr_mult = schedule(min(1.0, max(step / total_steps, spent)))
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * lr_mult
            with autocast_for(device, config.amp):
                loss, metrics = task(net, batch)
            logged = _mean_over_processes(torch.stack([loss.detach().float(),
                                                       *(v.detach().float() for v in metrics.values())]))
            if not torch.isfinite(logged[0]):
                raise _diverged(f"loss became {logged[0].item()} at epoch {epoch + 1}, step {i + 1} "
                                f"(global step {step + 1})", run_dir, epoch)
            if scaler is not None:
                scaler.scale(loss).backward()
            else:
                loss.backward()
            if config.grad_clip:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            steps += 1
            if ema is not None:
                ema.update(model, step)
            for k, v in zip(["loss", *metrics], logged, strict=True):
                sums[k] = sums.get(k, 0) + v
            if show and (i % 10 == 0 or i + 1 == batches.steps_per_epoch):
                rate = (i + 1) * batches.batch_size / (time.perf_counter() - t0)
                bar.set_postfix({k: f"{float(v) / (i + 1):.4f}" for k, v in sums.items()}
                                | {"lr": f"{optimizer.param_groups[0]['lr']:.3g}", "img/s": f"{rate:.0f}"})
            t_data = time.perf_counter()
        bar.close()
        bad = _first_non_finite(model, ema, optimizer)
        if _max_over_processes(float(bad is not None)):
            raise _diverged(f"{bad or 'a weight, buffer or optimizer tensor (on another process)'} became "
                            f"non-finite in epoch {epoch + 1} though the loss stayed finite", run_dir, epoch)
        epoch_time = time.perf_counter() - t0
        elapsed += epoch_time
        used = _max_over_processes(used + clock() - c0)
        record: dict[str, Any] = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"]}
        record |= {f"train_{k}": float(v) / steps for k, v in sums.items()}
        record |= {"epoch_time_s": round(epoch_time, 2), "elapsed_s": round(elapsed, 1), "budget_s": round(used, 1),
                   "train_img_s": round(steps * batches.batch_size / epoch_time, 1),
                   "data_share": round(data_time / epoch_time, 4)}
        if steps < batches.steps_per_epoch:
            record["budget_stop"] = True
        judged = ema.module if ema is not None else model
        if evaluate is not None:
            record |= evaluate(judged)
        history.append(record)
        if rank == 0:
            _save_epoch(run_dir, model, ema, optimizer, judged, meta, record, config, best)
        if world > 1:
            dist.barrier()  # the other processes may read the checkpoints rank 0 just wrote
        if config.monitor in record:
            best = max(best, record[config.monitor])
        if show:
            tqdm.write("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
    return history


def _save_epoch(run_dir: Path, model: nn.Module, ema: Ema | None, optimizer: torch.optim.Optimizer,
                judged: nn.Module, meta: dict, record: dict, config: LoopConfig, best: float) -> None:
    """Append the metrics line, then write ``best``, ``last`` and finally the state that commits the epoch.

    Without the monitored metric (no evaluation) ``best`` is simply the latest.
    """
    JsonLog(run_dir / METRICS).append(record)
    ckpt_meta = meta | {"epoch": record["epoch"], "metrics": record}
    if record.get(config.monitor, math.inf) > best:
        save_checkpoint(run_dir / "best", judged.state_dict(), ckpt_meta)
    save_checkpoint(run_dir / "last", judged.state_dict(), ckpt_meta)
    opt_tensors, opt_info = optimizer_tensors(optimizer)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()} | opt_tensors
    if ema is not None:
        tensors |= {f"ema.{k}": v for k, v in ema.module.state_dict().items()}
    best = max(best, record.get(config.monitor, -math.inf))
    save_state(run_dir / "state.safetensors", tensors,
               {"epoch": record["epoch"], "step": record["step"], "best": best, "elapsed": record["elapsed_s"],
                "used": record["budget_s"],
                "optimizer": opt_info})
