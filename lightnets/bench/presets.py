"""Benchmark presets: named model lists with the table each one is meant to reproduce."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import LightnetsError
from ..models import list_models
from .benchmark import CIFAR10_TEST_IMAGES, BenchResult

# The source experiment (a Qiita article comparing VoVNet with small DenseNets on CIFAR-10) timed
# these at 32x32: its small DenseNets ('densenet_k{growth}_{blocks}'), VoVNet-27-slim/39/57; PeleeNet
# and the MobileNets join them as the other efficient baselines.
SOURCE_PATTERNS = ("densenet_k*_cifar", "vovnet*_cifar", "peleenet*_cifar", "mobilenetv1_100_cifar",
                   "mobilenetv3_large_100_cifar", "mobilenetv3_small_100_cifar")
PRESETS = ("source",)


def preset_models(preset: str) -> list[str]:
    """The registered models of ``preset``; taken from the registry, so families added later join in."""
    if preset not in PRESETS:
        raise LightnetsError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    return list(dict.fromkeys(n for pattern in SOURCE_PATTERNS for n in list_models(pattern)))


def source_rows(results: Sequence[BenchResult]) -> list[dict[str, str]]:
    """The source experiment's columns: train seconds per CIFAR-10 epoch, seconds for the 10,000 test
    images at batch 1 ('real-time inference') and at batch 32, parameters, and accuracy where known.

    The test-set times are the median batch-1 latency and the batch-32 throughput scaled to 10,000
    images, not a timed pass over the images; the train time is the measured step rate scaled to 50,000.
    """
    rows = []
    for r in results:
        bs32 = r.throughput.get(32)
        rows.append({
            "model": r.model,
            "backend": r.backend,
            "acc %": "-" if r.accuracy is None else f"{100 * r.accuracy:.2f}",
            "train s/epoch": "-" if r.train_epoch_s is None else f"{r.train_epoch_s:.0f}",
            "test bs1 s": "-" if r.latency_ms is None else f"{r.latency_ms * CIFAR10_TEST_IMAGES / 1000:.0f}",
            "test bs32 s": "-" if bs32 is None else f"{CIFAR10_TEST_IMAGES / bs32:.1f}",
            "params M": f"{r.params / 1e6:.3f}",
            "status": r.status,
        })
    return rows
