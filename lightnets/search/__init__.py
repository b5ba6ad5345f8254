"""Latency-aware architecture search: the MobileNetV3-like space, latency lookup tables, MnasNet's reward
and regularized evolution with proxy training, NetAdapt and EfficientNet's compound scaling."""

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
    table_latency,
    timed_layers,
)
from .netadapt import AdaptResult, adapt, equal_latency_width, proposal
from .proxy import ProxyBudget, proxy_accuracy, proxy_data, proxy_train
from .prune import narrower, prunable_widths, prune, removable
from .run import SearchResult, default_table_path, latency_table, plot_pareto, search
from .scale import PAPER, ScaleResult, coefficient_grid, compound_scaling, scaled_args
from .space import SPACES, SearchSpace, StageChoices, get_space

__all__ = [
    "PAPER",
    "SPACES",
    "AdaptResult",
    "Arch",
    "Candidate",
    "LatencyTable",
    "MnasSpaceNet",
    "ProxyBudget",
    "ScaleResult",
    "SearchResult",
    "SearchSpace",
    "StageArch",
    "StageChoices",
    "adapt",
    "arch_key",
    "as_arch",
    "build_latency_table",
    "coefficient_grid",
    "compound_scaling",
    "default_table_path",
    "device_description",
    "equal_latency_width",
    "get_space",
    "latency_table",
    "measure",
    "measure_side_by_side",
    "narrower",
    "network_layers",
    "plot_pareto",
    "proposal",
    "proxy_accuracy",
    "proxy_data",
    "proxy_train",
    "prunable_widths",
    "prune",
    "removable",
    "reference_arch",
    "regularized_evolution",
    "reward",
    "scaled_args",
    "search",
    "space_layers",
    "spearman",
    "table_latency",
    "timed_layers",
]
