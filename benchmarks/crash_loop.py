"""A kill -9 loop: crash safety and exact resume, shown on a tiny training run.

A tiny `lightnets train` run (a generated two-class image folder, ``mobilenetv1_025_cifar``, one thread, fp32,
contiguous layout, so nothing is measured and the run is deterministic) is killed with SIGKILL again and again:
half the kills at a random time, half a random 0-2 ms after the temporary file of a checkpoint write appears (the
file lives a few milliseconds before its rename). A kill counts as *during a write* when the killed process left a
temporary file behind (opened, not yet renamed into place). After
each kill every checkpoint in the folder must load (``best`` and ``last`` into a model, ``state`` as training
state) and the metrics log must read; then the run is continued with ``--resume`` (or restarted with
``--exist-ok`` while it has no state yet), and a resume that fails on its own is counted. When the kills are
done the run is resumed to its end and its last weights are compared, bit for bit, with an uninterrupted run's.

    python benchmarks/crash_loop.py --kills 20 --out crash_loop.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file

from lightnets._io import TEMP_NAME, JsonLog
from lightnets.bench.machine import cpu_info
from lightnets.train import load_model
from lightnets.train.checkpoint import load_state


def write_images(root: Path, per_class: int = 16) -> Path:
    """A two-class image folder (train/ and test/) of 32x32 PNGs, dark and light, so that the run learns."""
    for c, name in enumerate(["dark", "light"]):
        for split, n in (("train", per_class), ("test", 4)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (32, 32), (c * 200 + i, c * 200, 40)).save(folder / f"{i}.png")
    return root


def train_command(data: Path, run: Path, epochs: int, seed: int, how: str) -> list[str]:
    """The CLI command: a fresh run (``how`` "start"; "restart" with --exist-ok) or a resume."""
    fixed = ["--epochs", str(epochs), "--quiet"]
    if how == "resume":
        return [sys.executable, "-m", "lightnets.cli", "train", "--resume", str(run), *fixed]
    return [sys.executable, "-m", "lightnets.cli", "train", "--model", "mobilenetv1_025_cifar", "--data", str(data),
            "--batch-size", "8", "--warmup", "0", "--seed", str(seed), "--threads", "1", "--amp", "none",
            "--no-channels-last", "--out", str(run), *fixed, *(["--exist-ok"] if how == "restart" else [])]


def temp_files(run: Path, pid: int | None = None) -> list[str]:
    """The temporary files of ``atomic_output`` in ``run`` (of process ``pid`` only, when given)."""
    found = [TEMP_NAME.fullmatch(p.name) for p in run.iterdir()] if run.is_dir() else []
    return sorted(m.string for m in found if m and (pid is None or m["pid"] == str(pid)))


def check_loads(run: Path) -> dict[str, str]:
    """Each checkpoint file present, loaded as a user or a resume would: "ok" or the error."""
    results = {}
    for stem in ("best", "last"):
        if (run / f"{stem}.safetensors").exists() or (run / f"{stem}.json").exists():
            try:
                load_model(run / stem)
                results[stem] = "ok"
            except Exception as err:  # noqa: BLE001 - every failure is a finding to report
                results[stem] = f"{type(err).__name__}: {err}"
    if (run / "state.safetensors").exists():
        try:
            load_state(run / "state.safetensors")
            results["state"] = "ok"
        except Exception as err:  # noqa: BLE001
            results["state"] = f"{type(err).__name__}: {err}"
    try:
        JsonLog(run / "metrics.jsonl").read()
        results["metrics.jsonl"] = "ok"
    except Exception as err:  # noqa: BLE001
        results["metrics.jsonl"] = f"{type(err).__name__}: {err}"
    return results


def state_epoch(run: Path) -> int | None:
    """The epoch the committed training state holds (None: no state yet)."""
    try:
        return load_state(run / "state.safetensors")[1]["epoch"]
    except Exception:  # noqa: BLE001 - absent (or, which check_loads reports, unreadable)
        return None


def kill_during_a_write(proc: subprocess.Popen, run: Path, delay: float, timeout: float = 60) -> bool:
    """Spin until ``proc`` has a temporary file of a checkpoint open in ``run`` (the few milliseconds between its
    creation and its rename), wait ``delay`` seconds more, then SIGKILL it (at ``timeout`` too); False when it ended
    on its own first."""
    prefixes = tuple(f".{name}.tmp{proc.pid}." for name in ("best.safetensors", "last.safetensors",
                                                              "state.safetensors", "best.json", "last.json"))
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        if run.is_dir() and any(entry.name.startswith(prefixes) for entry in os.scandir(run)):
            until = time.perf_counter() + delay
            while time.perf_counter() < until:  # a busy wait: sleep's granularity is coarser than the window
                pass
            break
    if proc.poll() is not None:
        return False
    proc.kill()
    return True


def kill_after(proc: subprocess.Popen, delay: float) -> bool:
    """SIGKILL ``proc`` after ``delay`` seconds; False when it ended on its own first."""
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        return True


def crash_loop(kills: int, epochs: int, seed: int, work: Path) -> dict[str, Any]:
    """Run the loop in ``work``; returns the summary with one record per kill."""
    rng = random.Random(seed)
    env = os.environ | {"LIGHTNETS_CACHE": str(work / "cache")}
    data = write_images(work / "data")
    reference, run = work / "reference", work / "run"
    started = time.perf_counter()
    subprocess.run(train_command(data, reference, epochs, seed, "start"), env=env, check=True,
                   stdout=subprocess.DEVNULL)
    uninterrupted_s = time.perf_counter() - started
    records: list[dict[str, Any]] = []
    outcomes: list[tuple[str, str]] = []  # (start, restart or resume; killed, finished or the error)
    how = "start"
    finished_early = False
    while len(records) < kills:
        log, before = work / f"stderr-{len(records)}.txt", state_epoch(run)
        with log.open("w") as err:
            proc = subprocess.Popen(train_command(data, run, epochs, seed, how), env=env, stdout=subprocess.DEVNULL,
                                    stderr=err)
        mode = "write" if len(records) % 2 else "random"
        t0 = time.monotonic()
        if mode == "write":
            killed = kill_during_a_write(proc, run, rng.uniform(0, 0.002))
        else:
            killed = kill_after(proc, rng.uniform(1.0, 8.0))
        if not killed:  # it ended on its own: finished, or failed
            if proc.returncode == 0:
                finished_early = True
                break
            outcomes.append((how, f"exit {proc.returncode}: {log.read_text().strip().splitlines()[-1:]}"))
            how = "resume" if state_epoch(run) is not None else "restart"
            continue
        outcomes.append((how, "killed"))
        proc.wait()
        left = temp_files(run, proc.pid)
        loads = check_loads(run)
        epoch = state_epoch(run)
        records.append({"kill": len(records) + 1, "mode": mode, "after_s": round(time.monotonic() - t0, 3),
                        "process": how, "during_write": bool(left), "temp_files_left": left,
                        "state_epoch_before": before, "state_epoch": epoch, "loads": loads})
        how = "resume" if epoch is not None else "restart"
    final = subprocess.run(train_command(data, run, epochs, seed, how), env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    outcomes.append((how, "finished" if final.returncode == 0 else
                     f"exit {final.returncode}: {final.stderr.strip().splitlines()[-1:]}"))
    a, b = load_file(reference / "last.safetensors"), load_file(run / "last.safetensors")
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    resumes = [result for process, result in outcomes if process == "resume"]
    cpu = cpu_info()
    return {
        "kills": len(records),
        "kills_aimed_at_writes": sum(r["mode"] == "write" for r in records),
        "kills_during_a_write": sum(r["during_write"] for r in records),
        "checkpoint_files_loaded": sum(len(r["loads"]) for r in records),
        "checkpoint_files_failed": sum(v != "ok" for r in records for v in r["loads"].values()),
        "kills_after_which_all_loaded": sum(all(v == "ok" for v in r["loads"].values()) for r in records),
        "resumes": len(resumes),
        "resumes_ok": sum(result in ("killed", "finished") for result in resumes),
        "resumes_that_committed_an_epoch_before_their_kill": sum(
            r["process"] == "resume" and r["state_epoch"] > r["state_epoch_before"] for r in records),
        "state_went_back": sum(r["state_epoch"] is not None and r["state_epoch_before"] is not None
                               and r["state_epoch"] < r["state_epoch_before"] for r in records),
        "restarts_before_first_state": sum(process == "restart" for process, _ in outcomes),
        "failures": [f"{process}: {result}" for process, result in outcomes if result not in ("killed", "finished")],
        "final_exit_status": final.returncode,
        "final_epoch": state_epoch(run),
        "last_weights_equal_uninterrupted_run": same,
        "temp_files_left_at_end": temp_files(run),
        "finished_before_all_kills": finished_early,
        "epochs": epochs,
        "uninterrupted_run_s": round(uninterrupted_s, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {"cpu": cpu.name, "flags": list(cpu.flags), "cores": cpu.cores, "python": platform.python_version(),
                    "torch": torch.__version__},
        "records": records,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=150, help="of the tiny run (enough to outlast the kills)")
    parser.add_argument("--seed", type=int, default=0, help="of the run and of the kill times")
    parser.add_argument("--work", default=None, help="folder for the data and runs (default: a temporary one)")
    parser.add_argument("--out", default=None, help="write the summary (with every kill's record) here as json")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="crash_loop-"))
    try:
        summary = crash_loop(args.kills, args.epochs, args.seed, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    for key, value in summary.items():
        if key != "records":
            print(f"{key}: {value}")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
