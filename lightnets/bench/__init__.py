"""Measurements: parameters, MACs, latency, throughput, training step rate, and the tables of them."""

from .backends import BACKENDS, backend_missing
from .benchmark import BenchResult, plot_accuracy_latency, result_rows, run_benchmark, write_results
from .count import Counts, count, count_params
from .machine import CpuInfo, cpu_info, cpu_name, device_key
from .presets import PRESETS, preset_models, source_rows
from .timing import Timing, matmul_peak_gflops, thread_count, time_fn, time_interleaved

__all__ = [
    "BACKENDS",
    "PRESETS",
    "BenchResult",
    "Counts",
    "CpuInfo",
    "Timing",
    "backend_missing",
    "count",
    "count_params",
    "cpu_info",
    "cpu_name",
    "device_key",
    "matmul_peak_gflops",
    "plot_accuracy_latency",
    "preset_models",
    "result_rows",
    "run_benchmark",
    "source_rows",
    "thread_count",
    "time_fn",
    "time_interleaved",
    "write_results",
]
