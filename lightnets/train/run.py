"""The run: its folder, its record (``config.json``), its logs and resume, shared by every task that trains or
searches, so that a new task adds only its data, model, task and evaluation.

A run folder holds ``config.json`` (what the run was started with, and its ``kind``: the command that starts such
runs), the JSONL logs it appends to, its checkpoints and plots. ``Run.start`` makes the folder: the given one
(refused when it holds files, unless ``exist_ok``, which clears only the files a run of that kind writes) or the
next free ``runs/KIND/NAME[-N]``. ``Run.resume`` reads a folder back and refuses one of another kind. There is one
resume rule: what the logged results depend on must agree (``Run.require``), and of a recipe only the number of
epochs may grow (``Run.recipe``). Under DDP the first process makes the folder and the others are told its name.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .._io import JsonLog, write_text_atomically
from ..errors import LightnetsError
from .loop import BatchSource, Evaluate, LoopConfig, Task, fit, rank_and_world
from .recipes import Recipe

# What a training run writes; ``Run.start(exist_ok=True)`` clears these (and a task's own) and nothing else.
TRAINING_FILES = ("metrics.jsonl", "config.json", "state.safetensors", "best.safetensors", "best.json",
                  "last.safetensors", "last.json", "curves.png", "confusion.png", "confusion.txt")

COMMANDS = {"detect": "detect train"}  # the command of a kind whose name is not its command's


def pick_device(device: str | None = None) -> torch.device:
    """The given device, else CUDA (this process's local rank), else MPS, else CPU."""
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def init_distributed(device: torch.device) -> None:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def refuse_existing(out: str | Path | None, exist_ok: bool) -> None:
    """Refuse a run folder that exists and holds files, unless ``exist_ok`` (checked before any slow work)."""
    if out is not None and not exist_ok and Path(out).is_dir() and any(Path(out).iterdir()):
        raise LightnetsError(f"run folder {out} already exists and is not empty; choose another --out, "
                             "pass --exist-ok to overwrite it, or --resume it")


def prepare_run_dir(out: str | Path | None, name: str, exist_ok: bool, kind: str = "train",
                    written: Sequence[str] = TRAINING_FILES) -> Path:
    """The run folder: ``out`` (refused if not empty, unless ``exist_ok``: then the ``written`` files of an earlier
    run are removed, nothing else) or the next free ``runs/KIND/NAME-N``."""
    if out is None:
        base = Path("runs") / kind / name
        out, i = base, 1
        while out.exists():
            i += 1
            out = base.with_name(f"{name}-{i}")
    out = Path(out)
    refuse_existing(out, exist_ok)
    for file in written:
        (out / file).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's ``config.json``, or one clear error saying it has none."""
    try:
        return json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LightnetsError(f"cannot resume {run_dir}: no readable config.json ({err})") from None


@dataclass
class Run:
    """A run folder and its record; ``resumed`` says whether it continues an earlier run."""

    dir: Path
    record: dict[str, Any]
    resumed: bool = False

    @property
    def kind(self) -> str:
        return self.record.get("kind", "train")

    @classmethod
    def start(cls, out: str | Path | None, name: str, kind: str, record: dict[str, Any], *,
              exist_ok: bool = False, written: Sequence[str] = TRAINING_FILES, folder: str | None = None) -> Run:
        """Make the folder (``out``, or the next free ``runs/FOLDER/NAME[-N]``, FOLDER defaulting to ``kind``) and
        write the record (with ``kind`` and the start time) as ``config.json``."""
        rank, world = rank_and_world()
        run_dir = prepare_run_dir(out, name, exist_ok, folder or kind, written) if rank == 0 else Path(out or "")
        if world > 1:
            shared = [str(run_dir)]
            dist.broadcast_object_list(shared)
            run_dir = Path(shared[0])
        record = {"kind": kind, **record, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        run = cls(run_dir, record)
        if rank == 0:
            run.save()
        return run

    @classmethod
    def resume(cls, run_dir: str | Path | None, kind: str) -> Run:
        """The run in ``run_dir``, refused unless it is of ``kind`` (a record without one, from an older version,
        is taken to be)."""
        if run_dir is None:
            raise LightnetsError("--resume needs --out, the folder of the run to continue")
        run = cls(Path(run_dir), read_run_config(run_dir), resumed=True)
        if run.record.get("kind", kind) != kind:
            command = COMMANDS.get(run.kind, run.kind)
            raise LightnetsError(f"{run_dir} is a {run.kind} run, not a {kind} run; resume it with "
                                 f"`lightnets {command} --resume {run_dir}`")
        return run

    def save(self) -> None:
        write_text_atomically(self.dir / "config.json", json.dumps(self.record, indent=2))

    def require(self, same: dict[str, Any]) -> None:
        """Refuse to continue unless the record agrees with ``same`` on every key (what its results depend on)."""
        changed = sorted(k for k, v in same.items() if self.record.get(k) != v)
        if changed:
            raise LightnetsError(f"cannot resume {self.dir}: its {', '.join(changed)} differ(s) from this run's, so "
                                 "its results do not apply")

    def recipe(self, **overrides: Any) -> Recipe:
        """The recorded recipe; of the ``overrides`` only a larger ``epochs`` may differ."""
        recorded = self.record["recipe"]
        rec = Recipe(**recorded).replace(**overrides)
        if rec.epochs < recorded["epochs"] or rec.to_dict() | {"epochs": 0} != recorded | {"epochs": 0}:
            raise LightnetsError("a resumed run keeps its recipe; only --epochs may grow")
        return rec

    def log(self, name: str) -> JsonLog:
        return JsonLog(self.dir / name)

    def fit(self, model: nn.Module, task: Task, batches: BatchSource, optimizer: torch.optim.Optimizer,
            schedule: Callable[[float], float], config: LoopConfig, *, evaluate: Evaluate | None = None,
            meta: dict[str, Any] | None = None) -> list[dict]:
        """``lightnets.train.loop.fit`` in this folder, continuing its saved state when the run is resumed."""
        return fit(model, task, batches, optimizer, schedule, config, self.dir, evaluate=evaluate, meta=meta,
                   resume=self.resumed)
