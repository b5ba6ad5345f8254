"""Latency-aware architecture search: the MobileNetV3-like space, latency lookup tables, MnasNet's reward
and regularized evolution with proxy training."""

from ..models.mnas_space import Arch, MnasSpaceNet, StageArch, as_arch, reference_arch
from .evolution import Candidate, arch_key, regularized_evolution, reward
from .latency import (
    LatencyTable,
    build_latency_table,
    device_description,
    measure,
    measure_side_by_side,
    network_layers,
    space_layers,
    spearman,
    timed_layers,
)
from .proxy import ProxyBudget, proxy_accuracy, proxy_data
from .run import SearchResult, default_table_path, latency_table, plot_pareto, search
from .space import SPACES, SearchSpace, StageChoices, get_space

__all__ = [
    "SPACES",
    "Arch",
    "Candidate",
    "LatencyTable",
    "MnasSpaceNet",
    "ProxyBudget",
    "SearchResult",
    "SearchSpace",
    "StageArch",
    "StageChoices",
    "arch_key",
    "as_arch",
    "build_latency_table",
    "default_table_path",
    "device_description",
    "get_space",
    "latency_table",
    "measure",
    "measure_side_by_side",
    "network_layers",
    "plot_pareto",
    "proxy_accuracy",
    "proxy_data",
    "reference_arch",
    "regularized_evolution",
    "reward",
    "search",
    "space_layers",
    "spearman",
    "timed_layers",
]
