"""Measurements: parameters, MACs, latency, throughput."""

from .count import Counts, count, count_params

__all__ = ["Counts", "count", "count_params"]
