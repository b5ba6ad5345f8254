"""The run: its folder, its record (``config.json``), its logs and resume, shared by every task that trains or
searches, so that a new task adds only its data, model, task and evaluation.

A run folder holds ``config.json`` (what the run was started with, and its ``kind``: the command that starts such
runs), the JSONL logs it appends to, its checkpoints and plots. ``Run.start`` makes the folder: the given one
(refused when it holds files, unless ``exist_ok`` and it holds a lightnets run: then only the files a run of that
kind writes are cleared, and named) or the next free ``runs/KIND/NAME[-N]``. ``Run.resume`` reads a folder back and
refuses one of another kind. Both remove the temporary files a killed write left behind. There is one resume rule:
what the logged results depend on must agree (``Run.require``; ``Run.require_given`` for the options given again at
resume), and of a recipe only the number of epochs may grow (``Run.recipe``). ``seed_everything`` comes before a
model is built, so that a seed makes the whole run reproducible. Under DDP the first process makes the folder and
the others are told its name.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .._io import JsonLog, is_temp_file, remove_stale_temp_files, write_text_atomically
from ..bench.machine import cpu_info
from ..errors import LightnetsError
from .loop import BatchSource, Evaluate, LoopConfig, Task, fit, rank_and_world
from .recipes import Recipe

# What a training run writes; ``Run.start(exist_ok=True)`` clears these (and a task's own) and nothing else.
TRAINING_FILES = ("metrics.jsonl", "config.json", "state.safetensors", "best.safetensors", "best.json",
                  "last.safetensors", "last.json", "curves.png", "confusion.png", "confusion.txt")

# The command of a kind whose name is not its command's.
COMMANDS = {"detect": "detect train", "segment": "segment train", "pose": "pose train"}


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


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (every device's): called before a model is built, so that two
    runs with one seed start from the same weights and, the loop reseeding each epoch, end with the same ones."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def holds_run(folder: Path, written: Sequence[str] = TRAINING_FILES) -> bool:
    """Whether ``folder`` holds a lightnets run, so ``exist_ok`` may clear it: its ``config.json`` is a run's record
    (it has a ``kind``, or, from an older version, the ``lightnets`` version that wrote it); or the folder holds only
    temporary files of a killed write and, for a kind that records no ``config.json`` (specialists), the files it
    writes and run folders."""
    try:
        record = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        record = None
    if isinstance(record, dict) and ("kind" in record or "lightnets" in record):
        return True
    own = () if "config.json" in written else written
    return all(is_temp_file(p) or (p.name in own and p.is_file()) or (bool(own) and p.is_dir() and holds_run(p))
               for p in folder.iterdir())


def refuse_existing(out: str | Path | None, exist_ok: bool, written: Sequence[str] = TRAINING_FILES) -> None:
    """Refuse a run folder that exists and holds files, unless ``exist_ok`` and it holds a lightnets run (checked
    before any slow work): ``exist_ok`` never clears a folder of the user's own."""
    if out is None or not Path(out).is_dir() or not any(Path(out).iterdir()):
        return
    if not exist_ok:
        raise LightnetsError(f"run folder {out} already exists and is not empty; choose another --out, "
                             "pass --exist-ok to overwrite it, or --resume it")
    if not holds_run(Path(out), written):
        raise LightnetsError(f"--exist-ok clears only a lightnets run folder, and {out} holds files but no run's "
                             "config.json; choose another --out, or empty it yourself")


def prepare_run_dir(out: str | Path | None, name: str, exist_ok: bool, kind: str = "train",
                    written: Sequence[str] = TRAINING_FILES) -> Path:
    """The run folder: ``out`` (refused if not empty, unless ``exist_ok`` and it holds a run: then the ``written``
    files of the earlier run are removed, and named, nothing else) or the next free ``runs/KIND/NAME-N``; the
    temporary files a killed write left there are removed."""
    if out is None:
        base = Path("runs") / kind / name
        out, i = base, 1
        while out.exists():
            i += 1
            out = base.with_name(f"{name}-{i}")
    out = Path(out)
    refuse_existing(out, exist_ok, written)
    removed = [file for file in written if (out / file).is_file() or (out / file).is_symlink()]
    for file in removed:
        (out / file).unlink()
    if removed:
        print(f"--exist-ok: removed {', '.join(removed)} of the earlier run in {out}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out)
    return out


def recorded_source(data: Any) -> str | None:
    """What a run records as its data: a data set object's source path (its ``source.path``), else the path given."""
    source = getattr(getattr(data, "source", None), "path", None)
    if source is not None:
        return str(source)
    return None if data is None else str(data)


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's ``config.json``, or one clear error saying it has none."""
    try:
        return json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LightnetsError(f"cannot resume {run_dir}: no readable config.json ({err})") from None


def _brief(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _same_file(a: Any, b: Any) -> bool:
    try:
        return isinstance(a, str) and isinstance(b, str) and os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


@dataclass
class RunResult:
    """What a task's training returns: the run folder, the per-epoch metrics, the final metrics of the last
    weights on the held-out data, and the run's record."""

    run_dir: Path
    history: list[dict]
    metrics: dict[str, float]
    config: dict[str, Any] = field(default_factory=dict)


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
        record = {"kind": kind, **record, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "machine": cpu_info().describe()}  # a budgeted run's figures are this CPU's figures
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
        if rank_and_world()[0] == 0:
            remove_stale_temp_files(run.dir)
        return run

    def save(self) -> None:
        write_text_atomically(self.dir / "config.json", json.dumps(self.record, indent=2))

    def require(self, same: dict[str, Any]) -> None:
        """Refuse to continue unless the record agrees with ``same`` on every key (what its results depend on)."""
        changed = sorted(k for k, v in same.items() if self.record.get(k) != v)
        if changed:
            values = "; ".join(f"{k}: {_brief(self.record.get(k))} there, {_brief(same[k])} here" for k in changed)
            raise LightnetsError(f"cannot resume {self.dir}: its {', '.join(changed)} differ(s) from this run's, so "
                                 f"its results do not apply ({values})")

    def require_given(self, paths: Sequence[str] = ("data",), **given: Any) -> None:
        """``require`` for the options given again at resume, where None (not given) is no conflict: the run continues
        with its recorded ones, so a different one would otherwise be silently ignored. Values are compared as their
        JSON (as recorded); of the ``paths`` keys, another spelling of the recorded file or folder is the same."""
        same = {}
        for key, value in given.items():
            if value is not None:
                value = json.loads(json.dumps(value, default=str))
                recorded = self.record.get(key)
                same[key] = recorded if key in paths and _same_file(value, recorded) else value
        self.require(same)

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
