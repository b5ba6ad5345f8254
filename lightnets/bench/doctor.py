"""``lightnets doctor``: what this machine is and what runs fastest on it, measured, for a bug report.

It lists the devices, the CPU model and the flags that decide speed, the cores, memory and library versions,
then measures on one small model, in about half a minute: the training step of every precision, layout and
thread count (emulated bf16 included, to show what it would cost), and the batch-1 latency of every installed
deploy runtime on the model's ONNX export.
"""

from __future__ import annotations

import importlib.metadata
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..models import create_model, model_info
from .machine import cpu_info, cuda_native_bf16, known_flags, proc_cpuinfo, usable_cores
from .probe import Candidate, candidate_rates, native_precisions, precision_name, thread_options

PACKAGES = ("torch", "onnx", "onnxruntime", "openvino", "numpy", "lightnets")


@dataclass
class DoctorReport:
    """The machine facts (name -> value) and the measured tables (rows for ``format_table``)."""

    facts: dict[str, str]
    training: list[dict[str, str]] = field(default_factory=list)
    deploy: list[dict[str, str]] = field(default_factory=list)
    model: str = ""
    seconds: float = 0.0


def machine_facts() -> dict[str, str]:
    """Devices, CPU model and flags, cores, memory, versions: what a timing depends on."""
    cpu = cpu_info()
    ids = proc_cpuinfo()
    cpu_id = ", ".join(f"{k} {ids[k]}" for k in ("vendor_id", "cpu family", "model", "stepping") if k in ids)
    facts = {"cpu": cpu.name + (f" ({cpu_id})" if cpu_id else ""), "architecture": cpu.arch,
             "flags": ", ".join(f"{f} {'yes' if f in cpu.flags else 'no'}" for f in known_flags(cpu.arch)),
             "native bf16": "yes" if cpu.native_bf16 else "no (bf16 is emulated: slower than fp32)",
             "int8 dot product (VNNI)": "yes" if cpu.vnni else "no",
             "usable cores": str(usable_cores()),
             "memory": f"{cpu.memory_gb:.1f} GiB" if cpu.memory_gb else "unknown",
             "torch cpu capability": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            dev = torch.device("cuda", i)
            major, minor = torch.cuda.get_device_capability(dev)
            facts[f"cuda:{i}"] = (f"{torch.cuda.get_device_name(dev)}, compute {major}.{minor}, "
                                  f"bf16 {'native' if cuda_native_bf16(dev) else 'no'}")
    else:
        facts["cuda"] = "none"
    if torch.backends.mps.is_available():
        facts["mps"] = "available"
    for package in PACKAGES:
        try:
            facts[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            facts[package] = "not installed"
    if facts["openvino"] != "not installed":
        import openvino as ov

        facts["openvino cpu capabilities"] = " ".join(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return facts


def training_table(model: str, batch: int, rounds: int = 2) -> list[dict[str, str]]:
    """Training img/s of every precision x layout x thread count on ``model`` at ``batch``, side by side."""
    net = create_model(model)
    size = model_info(model).input_size
    precisions = [None, "bf16"]
    native = native_precisions(torch.device("cpu"))[0]
    candidates = [Candidate(p, layout, t) for t in thread_options(usable_cores()) for p in precisions
                  for layout in (True, False)]
    rates = candidate_rates(net, (3, size, size), batch, candidates, "cpu", rounds)
    best = max(rates.values())
    rows = []
    for c, rate in sorted(rates.items(), key=lambda item: -item[1]):
        emulated = c.amp is not None and c.amp not in native
        rows.append({"precision": precision_name(c.amp) + (" (emulated)" if emulated else ""),
                     "layout": "channels_last" if c.channels_last else "NCHW", "threads": str(c.threads),
                     "train img/s": f"{rate:.0f}", "x fastest": f"{rate / best:.2f}",
                     "": "fastest" if rate == best else ""})
    return rows


def deploy_table(model: str, min_time: float = 0.5) -> list[dict[str, str]]:
    """Batch-1 latency of the eager model and every deploy runtime installed here, interleaved (random weights)."""
    from .backends import BACKENDS, backend_missing
    from .benchmark import run_benchmark

    backends = [b for b in BACKENDS if b != "compile" and backend_missing(b) is None]
    results = run_benchmark([model], batch_sizes=[1], backends=backends, min_time=min_time)
    timed = [r for r in results if r.latency_ms is not None]
    best = min((r.latency_ms for r in timed), default=None)
    rows = []
    for r in sorted(results, key=lambda r: r.latency_ms if r.latency_ms is not None else float("inf")):
        rows.append({"runtime": r.backend, "batch-1 ms": "-" if r.latency_ms is None else f"{r.latency_ms:.2f}",
                     "x fastest": "-" if r.latency_ms is None else f"{best / r.latency_ms:.2f}",
                     "status": r.status, "": "fastest" if r.latency_ms == best else ""})
    return rows


def doctor(model: str = "vovnet27_slim_cifar", batch: int = 32, measure: bool = True) -> DoctorReport:
    """The machine's facts and, with ``measure``, the training and deploy tables on ``model``."""
    started = time.perf_counter()
    report = DoctorReport(machine_facts(), model=model)
    if measure:
        report.training = training_table(model, batch)
        report.deploy = deploy_table(model)
    report.seconds = time.perf_counter() - started
    return report


def facts_text(facts: dict[str, Any]) -> str:
    width = max(map(len, facts))
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in facts.items())
