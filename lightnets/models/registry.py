"""Model registry: names to constructors, default input sizes, and the figures each paper publishes."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import LightnetsError


@dataclass(frozen=True)
class Published:
    """Figures a paper (or a reference implementation) gives for a model, and where they come from.

    ``params`` and ``macs`` are absolute counts (not millions); ``top1`` is ImageNet top-1 in percent.
    ``reference_params`` is the count of a named reference implementation, more precise than a paper
    that rounds; tests hold our counts to it where it is given.
    ``macs_at`` maps other input sizes the paper reports to their MACs (MobileNetV1's resolution multiplier).
    """

    source: str
    params: float | None = None
    macs: float | None = None
    top1: float | None = None
    reference_params: float | None = None
    reference_source: str | None = None
    macs_at: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    builder: Callable[..., nn.Module]
    kwargs: dict[str, Any]
    input_size: int
    num_classes: int
    published: Published | None
    summary: str

    @property
    def is_cifar(self) -> bool:
        return self.name.endswith("_cifar")


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    family: str,
    input_size: int,
    summary: str,
    num_classes: int | None = None,
    published: Published | None = None,
    **kwargs: Any,
) -> None:
    """Add a model under ``name``; ``kwargs`` are the builder's arguments that define this variant.

    CIFAR variants (names ending in ``_cifar``) default to 10 classes, the rest to ImageNet's 1000.
    """
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    if num_classes is None:
        num_classes = 10 if name.endswith("_cifar") else 1000
    _REGISTRY[name] = ModelEntry(name, family, builder, dict(kwargs), input_size, num_classes, published, summary)


def _unknown(name: str) -> LightnetsError:
    """The error for an unknown name, suggesting names that a typo or a missing suffix would explain."""

    def similarity(candidate: str) -> float:
        # Comparing with the candidate's prefix too lets 'mobilnetv3' find 'mobilenetv3_large_100'.
        prefix = candidate[: len(name) + 1]
        return max(difflib.SequenceMatcher(None, name, candidate).ratio(),
                   difflib.SequenceMatcher(None, name, prefix).ratio())

    scored = sorted((-similarity(n), n.endswith("_cifar"), n) for n in _REGISTRY)
    close = [n for score, _, n in scored[:3] if -score >= 0.6]
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; run `lightnets models` for the list"
    return LightnetsError(f"unknown model {name!r}{hint}")


def model_info(name: str) -> ModelEntry:
    """The registry entry of ``name``: builder, default arguments, input size and published figures."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise _unknown(name) from None


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names, sorted; ``pattern`` is a shell wildcard, or a plain substring if it has none."""
    names = sorted(_REGISTRY)
    if not pattern:
        return names
    if not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    return [n for n in names if fnmatch.fnmatch(n, pattern)]


def create_model(name: str, num_classes: int | None = None, in_chans: int = 3, **overrides: Any) -> nn.Module:
    """Build a registered model. ``overrides`` replace the variant's arguments (e.g. ``width_mult``).

    ``num_classes`` defaults to 10 for ``_cifar`` variants and 1000 otherwise.
    """
    entry = model_info(name)
    kwargs = {**entry.kwargs, **overrides}
    accepted = inspect.signature(entry.builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            allowed = sorted(set(accepted) - {"num_classes", "in_chans"})
            raise LightnetsError(
                f"model {name!r} does not take {', '.join(unknown)}; it takes: {', '.join(allowed)}"
            )
    return entry.builder(num_classes=entry.num_classes if num_classes is None else num_classes,
                         in_chans=in_chans, **kwargs)
