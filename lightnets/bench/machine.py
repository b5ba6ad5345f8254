"""What the machine at hand can do: the CPU model and the instruction-set flags that decide which precisions run
natively, the usable cores, the accelerator. Read, never assumed: the speed probe (``probe.py``) narrows its
candidates with these facts and then measures.

bf16 is native on x86 with AVX512_BF16 or AMX-BF16 and on ARM with the BF16 extension; elsewhere PyTorch and
OpenVINO emulate it in fp32 (seen 3x slower than fp32 on an AVX-512 Xeon without AVX512_BF16, 12x on an AVX2
EPYC). int8 is fast with VNNI (AVX512_VNNI, AVX-VNNI, AMX-INT8) or ARM's dot-product instructions.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# The flags that matter for speed, as /proc/cpuinfo spells them (x86 "flags", ARM "Features").
X86_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "amx_int8")
ARM_FLAGS = ("asimd", "asimddp", "i8mm", "bf16", "sve", "sve2")
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def known_flags(arch: str) -> tuple[str, ...]:
    """The speed-relevant flags looked for on an architecture (``x86_64`` or an ARM one)."""
    return X86_FLAGS if arch == "x86_64" else ARM_FLAGS


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name, the speed-relevant flags it has, and the cores this process may use."""

    name: str
    arch: str
    flags: tuple[str, ...]
    cores: int
    memory_gb: float | None = None

    @property
    def native_bf16(self) -> bool:
        return any(f in self.flags for f in BF16_FLAGS)

    @property
    def vnni(self) -> bool:
        return any(f in self.flags for f in VNNI_FLAGS)

    def describe(self) -> str:
        """One line for a table caption: model, flags, cores."""
        flags = " ".join(self.flags) or "none of " + " ".join(known_flags(self.arch))
        return f"{self.name} ({self.arch}; {flags}; {self.cores} cores)"


def proc_cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (Linux), keyed by lower-case name."""
    path = Path("/proc/cpuinfo")
    fields: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                if fields:
                    break
                continue
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def _sysctl(name: str) -> str:
    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _memory_gb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU, read from /proc/cpuinfo (Linux) or sysctl (macOS)."""
    arch = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
    info = proc_cpuinfo()
    name = info.get("model name") or info.get("hardware") or ""
    present = set((info.get("flags") or info.get("features") or "").split())
    if not info and platform.system() == "Darwin":
        name = _sysctl("machdep.cpu.brand_string")
        if arch == "aarch64":  # Apple silicon: every feature is a sysctl of its own
            present = {"asimd", "asimddp"} | {flag for flag, key in (("bf16", "hw.optional.arm.FEAT_BF16"),
                                                                     ("i8mm", "hw.optional.arm.FEAT_I8MM"))
                                              if _sysctl(key) == "1"}
        else:  # Intel Macs spell the flags without underscores ("AVX512VNNI")
            present = set(f"{_sysctl('machdep.cpu.features')} {_sysctl('machdep.cpu.leaf7_features')}".lower().split())
    squeezed = {f.replace("_", "") for f in present}
    flags = tuple(f for f in known_flags(arch) if f in present or f.replace("_", "") in squeezed)
    return CpuInfo(name or platform.processor() or arch, arch, flags, usable_cores(), _memory_gb())


def cpu_name() -> str:
    """The CPU's model name, for saying where a timing was taken."""
    return cpu_info().name


def cuda_native_bf16(device: torch.device) -> bool:
    """Whether the GPU computes bf16 in hardware (compute capability 8.0 and up), not by emulation."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def device_key(device: str | torch.device = "cpu") -> dict[str, Any]:
    """What a measured speed depends on besides the model: the processor (model, flags, cores) or GPU, and torch."""
    dev = torch.device(device)
    if dev.type == "cuda":
        hardware: dict[str, Any] = {"gpu": torch.cuda.get_device_name(dev),
                                    "capability": list(torch.cuda.get_device_capability(dev))}
    else:
        cpu = cpu_info()
        hardware = {"cpu": cpu.name, "flags": list(cpu.flags), "cores": cpu.cores}
    return {"device": dev.type, **hardware, "torch": torch.__version__}
