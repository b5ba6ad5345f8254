"""Networks of the MobileNetV3-like search space, each described by a plain record (``Arch``).

MnasNet's factorised hierarchical space: a stem, a few stages and a head, where a stage repeats one
inverted-residual block ``layers`` times (the first with the stage's stride) and may pick its own kernel,
expansion ratio and squeeze-excite. ``lightnets search`` explores these records; any record, searched or
written by hand, builds a network through ``create_model("mnas_space", arch=...)`` and, being plain JSON,
travels in a checkpoint's ``model_args`` so ``load_model`` rebuilds it.

The network is described once, as a list of layer configurations (stem, blocks, head); the model is built
from that list and the latency table (``lightnets.search.latency``) times exactly those configurations, so
a predicted latency and the network it predicts cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import LightnetsError
from ..layers import ACTIVATIONS, ConvBnAct, InvertedResidual, get_act, init_weights, make_divisible
from .base import ClassifierHead, LightNet, build_stages, check_multiplier
from .registry import register_model


@dataclass(frozen=True)
class StemLayer:
    """The 3x3 h-swish stem convolution."""

    in_chs: int
    out_chs: int
    stride: int

    @property
    def key(self) -> str:
        return f"stem k3 s{self.stride} in{self.in_chs} out{self.out_chs} hswish"

    def build(self) -> nn.Module:
        return ConvBnAct(self.in_chs, self.out_chs, 3, self.stride, act=nn.Hardswish)


@dataclass(frozen=True)
class BlockLayer:
    """One inverted residual block with its channels resolved (``se_chs`` 0: no squeeze-excite)."""

    in_chs: int
    expand_chs: int
    out_chs: int
    kernel: int
    stride: int
    se_chs: int
    act: str

    @property
    def key(self) -> str:
        return (f"block k{self.kernel} s{self.stride} in{self.in_chs} exp{self.expand_chs} out{self.out_chs} "
                f"se{self.se_chs} {self.act}")

    def build(self, drop_path: float = 0.0) -> InvertedResidual:
        return InvertedResidual(self.in_chs, self.expand_chs, self.out_chs, self.kernel, self.stride,
                                act=get_act(self.act), se_chs=self.se_chs, se_act=nn.ReLU, se_gate=nn.Hardsigmoid,
                                drop_path=drop_path)


@dataclass(frozen=True)
class HeadLayer:
    """MobileNetV3's efficient last stage: 1x1 conv to ``final_chs``, pool, ``hidden_chs`` h-swish, classifier."""

    in_chs: int
    final_chs: int
    hidden_chs: int
    num_classes: int
    stride: int = 1

    @property
    def key(self) -> str:
        return f"head in{self.in_chs} final{self.final_chs} hidden{self.hidden_chs} classes{self.num_classes}"

    def build_parts(self, drop_rate: float = 0.0) -> tuple[ConvBnAct, ClassifierHead]:
        return (ConvBnAct(self.in_chs, self.final_chs, 1, act=nn.Hardswish),
                ClassifierHead(self.final_chs, self.num_classes, drop_rate, hidden_chs=self.hidden_chs,
                               hidden_act=nn.Hardswish))

    def build(self) -> nn.Module:
        return nn.Sequential(*self.build_parts())


Layer = StemLayer | BlockLayer | HeadLayer


@dataclass(frozen=True)
class StageArch:
    """One stage: ``layers`` blocks sharing kernel, expansion ratio (of the block's input width) and SE;
    the first block has ``stride`` and widens to ``out`` (before the width multiplier).

    ``mids`` (optional) gives each block's expanded width in channels, overriding the expansion ratio and
    the width multiplier: NetAdapt (``lightnets.search.netadapt``) prunes blocks one at a time, so a pruned
    network's blocks no longer follow one ratio. A block whose expanded width equals its input width has
    no expansion conv.
    """

    kernel: int
    expand: float
    se: bool
    layers: int
    out: int
    stride: int
    act: str
    mids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Arch:
    """A whole network: stem width and stride, stages, width multiplier, and the head's widths.

    ``width_mult`` scales the stem, every stage and ``final`` (rounded by ``make_divisible``); ``head`` (the
    pooled h-swish layer) is left unscaled, as in MobileNetV3. ``final_chs`` (optional) is the final 1x1
    conv's width in channels, overriding ``final * width_mult`` (a pruned network's).
    """

    stages: tuple[StageArch, ...]
    stem: int = 16
    stem_stride: int = 2
    width_mult: float = 1.0
    final: int = 960
    head: int = 1280
    final_chs: int | None = None

    def __post_init__(self) -> None:
        check_multiplier("width_mult", self.width_mult)
        if not self.stages:
            raise LightnetsError("an architecture needs at least one stage")
        if (self.stem_stride not in (1, 2) or self.stem < 1 or self.final < 1 or self.head < 0
                or (self.final_chs is not None and self.final_chs < 1)):
            raise LightnetsError(f"bad stem or head in {self}: stem_stride 1 or 2, widths >= 1")
        for i, s in enumerate(self.stages):
            problems = [
                (s.kernel >= 1 and s.kernel % 2 == 1, f"kernel must be odd, got {s.kernel}"),
                (s.expand >= 1, f"expand must be >= 1, got {s.expand}"),
                (s.layers >= 1, f"layers must be >= 1, got {s.layers}"),
                (s.out >= 1, f"out must be >= 1, got {s.out}"),
                (s.stride in (1, 2), f"stride must be 1 or 2, got {s.stride}"),
                (s.act in ACTIVATIONS, f"unknown activation {s.act!r}; known: {', '.join(sorted(ACTIVATIONS))}"),
                (s.mids is None or (len(s.mids) == s.layers and all(m >= 1 for m in s.mids)),
                 f"mids must give {s.layers} widths >= 1 (one per block), got {s.mids}"),
            ]
            for ok, message in problems:
                if not ok:
                    raise LightnetsError(f"stage {i}: {message}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (what checkpoints and search logs store). Optional widths that are not set
        are left out, so an unpruned architecture is written exactly as before they existed."""
        return _set_fields(self) | {"stages": [_set_fields(s) for s in self.stages]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Arch:
        """Inverse of ``to_dict``; a missing or unknown field is one clear error."""
        if not isinstance(data, dict) or "stages" not in data:
            raise LightnetsError(f"an architecture is a dict with 'stages' (and stem, width_mult, ...), got {data!r}")
        _check_fields("architecture", data, cls)
        stages = []
        for i, stage in enumerate(data["stages"]):
            _check_fields(f"stage {i}", stage, StageArch, required=True)
            mids = stage.get("mids")
            stages.append(StageArch(**(stage | {"mids": None if mids is None else tuple(mids)})))
        return cls(**(data | {"stages": tuple(stages)}))

    @property
    def total_stride(self) -> int:
        stride = self.stem_stride
        for s in self.stages:
            stride *= s.stride
        return stride

    def layers(self, num_classes: int, in_chans: int = 3) -> list[Layer]:
        """The network as layer configurations: stem, every block in order, head."""
        w = self.width_mult
        stem = StemLayer(in_chans, make_divisible(self.stem * w), self.stem_stride)
        out: list[Layer] = [stem]
        in_chs = stem.out_chs
        for stage in self.stages:
            out_chs = make_divisible(stage.out * w)
            for i in range(stage.layers):
                if stage.mids is not None:
                    expand_chs = stage.mids[i]
                else:
                    expand_chs = in_chs if stage.expand == 1 else make_divisible(in_chs * stage.expand)
                se_chs = make_divisible(expand_chs // 4) if stage.se else 0
                out.append(BlockLayer(in_chs, expand_chs, out_chs, stage.kernel, stage.stride if i == 0 else 1,
                                      se_chs, stage.act))
                in_chs = out_chs
        out.append(HeadLayer(in_chs, self.final_chs or make_divisible(self.final * w), self.head, num_classes))
        return out


def _set_fields(record: Arch | StageArch) -> dict[str, Any]:
    """A record's fields except those left at None (the optional widths), tuples as lists (as JSON reads them)."""
    values = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if v is not None}


def _check_fields(what: str, data: Any, kind: type, required: bool = False) -> None:
    if not isinstance(data, dict):
        raise LightnetsError(f"{what} must be a dict, got {data!r}")
    fields = {f.name for f in dataclasses.fields(kind)}
    needed = {f.name for f in dataclasses.fields(kind) if f.default is dataclasses.MISSING} if required else set()
    problems = [f"{kind} field(s) {', '.join(names)}" for kind, names in
                (("unknown", sorted(set(data) - fields)), ("missing", sorted(needed - set(data))))
                if names]
    if problems:
        raise LightnetsError(f"{what}: {'; '.join(problems)} (fields: {', '.join(sorted(fields))})")


def as_arch(arch: Arch | dict[str, Any] | str | Path) -> Arch:
    """An ``Arch`` from itself, its dict, or a JSON file holding either the dict or a config written by
    ``lightnets search`` (``{"model": ..., "model_args": {"arch": ...}}``)."""
    if isinstance(arch, Arch):
        return arch
    if isinstance(arch, (str, Path)):
        try:
            data = json.loads(Path(arch).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise LightnetsError(f"cannot read an architecture from {arch}: {err}") from None
        arch = data.get("model_args", {}).get("arch", data) if isinstance(data, dict) else data
    return Arch.from_dict(arch)


def skeleton(cifar: bool) -> tuple[int, list[tuple[int, int, str]]]:
    """Stem stride and each stage's (out channels, stride, activation): MobileNetV3-Large's layout.

    The CIFAR form (32x32 inputs) puts the stem and the first stride-2 stage at stride 1, as the
    repository's ``_cifar`` variants do: total stride 8, a 4x4 final map.
    """
    stages = [(16, 1, "relu"), (24, 1 if cifar else 2, "relu"), (40, 2, "relu"), (80, 2, "hswish"),
              (112, 1, "hswish"), (160, 2, "hswish")]
    return (1 if cifar else 2), stages


# The point of the space nearest MobileNetV3-Large 1.0: (kernel, expand, se, layers) per stage.
_REFERENCE = [(3, 1, False, 1), (3, 4, False, 2), (5, 3, True, 3), (3, 3, False, 4), (3, 6, True, 2), (5, 6, True, 3)]


def reference_arch(cifar: bool = False) -> Arch:
    """The MobileNetV3-Large-like member of the space: the registered models' default architecture."""
    stem_stride, rows = skeleton(cifar)
    stages = tuple(StageArch(k, e, se, n, out, stride, act)
                   for (k, e, se, n), (out, stride, act) in zip(_REFERENCE, rows, strict=True))
    return Arch(stages, stem_stride=stem_stride)


class MnasSpaceNet(LightNet):
    """A network of the search space, built from ``arch`` (an ``Arch``, its dict, or a JSON file).

    Stages in ``feature_info`` are runs of blocks at one stride (a stride-2 block starts a new one).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3,
                 arch: Arch | dict[str, Any] | str | Path | None = None, drop_rate: float = 0.2,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__(num_classes, in_chans)
        self.arch = reference_arch() if arch is None else as_arch(arch)
        stem, *blocks, head = self.arch.layers(num_classes, in_chans)
        self.stem = stem.build()
        built = [(b.build(drop_path_rate * i / len(blocks)), b.stride, b.stride == 2) for i, b in enumerate(blocks)]
        self.stages, self.feature_info = build_stages(built, stem.out_chs, stem.stride)
        self.final, self.head = head.build_parts(drop_rate)
        init_weights(self)


register_model("mnas_space", MnasSpaceNet, family="mnas_space", input_size=224, arch=reference_arch().to_dict(),
               summary="MobileNetV3-like search space member (default: the one nearest MobileNetV3-Large)")
register_model("mnas_space_cifar", MnasSpaceNet, family="mnas_space", input_size=32,
               arch=reference_arch(cifar=True).to_dict(),
               summary="search space member for 32x32: stem and first downsampling stage at stride 1")
