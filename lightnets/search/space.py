"""The MobileNetV3-like search space: per stage kernel 3/5, expansion 3/4/6, SE on/off and depth, plus one
width multiplier; seeded random sampling and single-decision mutation (regularized evolution's operator).

Stage widths are fixed (MobileNetV3-Large's, times the width multiplier), so every block a member can contain
is one of a few hundred configurations: the latency table measures each of them once.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from ..errors import LightnetsError
from ..models.mnas_space import Arch, StageArch, reference_arch, skeleton


@dataclass(frozen=True)
class StageChoices:
    """What the search may pick for one stage; ``out``, ``stride`` and ``act`` are fixed."""

    out: int
    stride: int
    act: str
    kernels: tuple[int, ...] = (3, 5)
    expands: tuple[float, ...] = (3, 4, 6)
    se: tuple[bool, ...] = (False, True)
    layers: tuple[int, ...] = (1, 2, 3)

    def options(self, field: str) -> tuple:
        return {"kernel": self.kernels, "expand": self.expands, "se": self.se, "layers": self.layers}[field]


STAGE_FIELDS = ("kernel", "expand", "se", "layers")


@dataclass(frozen=True)
class SearchSpace:
    """A space of ``Arch`` records; ``model`` is the registered name that builds them, ``input_size`` the
    resolution its latencies are measured at by default, ``num_classes`` its classifier's width."""

    name: str
    stages: tuple[StageChoices, ...]
    width_mults: tuple[float, ...]
    stem_stride: int
    model: str
    input_size: int
    num_classes: int
    stem: int = 16
    final: int = 960
    head: int = 1280

    @property
    def size(self) -> int:
        """How many distinct architectures the space holds."""
        per_stage = [math.prod(len(s.options(f)) for f in STAGE_FIELDS) for s in self.stages]
        return len(self.width_mults) * math.prod(per_stage)

    def decisions(self) -> list[tuple[int | None, str]]:
        """Every choice with more than one option: ``(None, "width_mult")`` and ``(stage, field)`` pairs."""
        out: list[tuple[int | None, str]] = [(None, "width_mult")] if len(self.width_mults) > 1 else []
        return out + [(i, f) for i, s in enumerate(self.stages) for f in STAGE_FIELDS if len(s.options(f)) > 1]

    def build(self, width_mult: float, picks: list[dict]) -> Arch:
        """The member with ``width_mult`` and, per stage, the ``{kernel, expand, se, layers}`` in ``picks``."""
        stages = tuple(StageArch(p["kernel"], p["expand"], p["se"], p["layers"], c.out, c.stride, c.act)
                       for c, p in zip(self.stages, picks, strict=True))
        return Arch(stages, stem=self.stem, stem_stride=self.stem_stride, width_mult=width_mult, final=self.final,
                    head=self.head)

    def sample(self, rng: random.Random) -> Arch:
        """A uniformly random member."""
        picks = [{f: rng.choice(s.options(f)) for f in STAGE_FIELDS} for s in self.stages]
        return self.build(rng.choice(self.width_mults), picks)

    def mutate(self, arch: Arch, rng: random.Random) -> Arch:
        """``arch`` with one uniformly chosen decision changed to a different option."""
        self.check(arch)
        decisions = self.decisions()
        if not decisions:
            raise LightnetsError(f"space {self.name!r} has a single member; there is nothing to mutate")
        stage, field = rng.choice(decisions)
        if stage is None:
            return replace(arch, width_mult=rng.choice([w for w in self.width_mults if w != arch.width_mult]))
        current = getattr(arch.stages[stage], field)
        new = rng.choice([o for o in self.stages[stage].options(field) if o != current])
        stages = list(arch.stages)
        stages[stage] = replace(stages[stage], **{field: new})
        return replace(arch, stages=tuple(stages))

    def check(self, arch: Arch) -> None:
        """Raise unless ``arch`` is a member of this space."""
        fixed = (arch.stem, arch.stem_stride, arch.final, arch.head, len(arch.stages))
        if fixed != (self.stem, self.stem_stride, self.final, self.head, len(self.stages)):
            raise LightnetsError(f"the architecture's stem, head or stage count differs from space {self.name!r}'s")
        if arch.width_mult not in self.width_mults:
            raise LightnetsError(f"width_mult {arch.width_mult} is not in space {self.name!r} "
                                 f"(choices: {', '.join(map(str, self.width_mults))})")
        for i, (s, c) in enumerate(zip(arch.stages, self.stages, strict=True)):
            if (s.out, s.stride, s.act) != (c.out, c.stride, c.act):
                raise LightnetsError(f"stage {i} of the architecture has out/stride/act {s.out}/{s.stride}/{s.act}, "
                                     f"space {self.name!r} has {c.out}/{c.stride}/{c.act}")
            for f in STAGE_FIELDS:
                if getattr(s, f) not in c.options(f):
                    raise LightnetsError(f"stage {i}: {f}={getattr(s, f)!r} is not in space {self.name!r} "
                                         f"(choices: {', '.join(map(str, c.options(f)))})")

    def reference(self) -> Arch:
        """The member nearest MobileNetV3-Large 1.0 (the registered model's default)."""
        arch = reference_arch(cifar=self.stem_stride == 1)
        self.check(arch)
        return arch


def _mobilenetv3_space(cifar: bool) -> SearchSpace:
    stem_stride, rows = skeleton(cifar)
    # The first stage is MobileNetV3's fixed 3x3 depthwise-separable block; depth choices follow its table
    # (2, 3, 4, 2, 3 layers in the searched stages), with one more allowed.
    layers = [(1,), (1, 2, 3), (1, 2, 3, 4), (1, 2, 3, 4, 5), (1, 2, 3), (1, 2, 3, 4)]
    stages = [StageChoices(out, stride, act, layers=n) for (out, stride, act), n in zip(rows, layers, strict=True)]
    stages[0] = replace(stages[0], kernels=(3,), expands=(1,), se=(False,))
    return SearchSpace(
        name="mobilenetv3_cifar" if cifar else "mobilenetv3", stages=tuple(stages), width_mults=(0.5, 0.75, 1.0),
        stem_stride=stem_stride, model="mnas_space_cifar" if cifar else "mnas_space", input_size=32 if cifar else 224,
        num_classes=10 if cifar else 1000,
    )


SPACES: dict[str, SearchSpace] = {s.name: s for s in (_mobilenetv3_space(False), _mobilenetv3_space(True))}


def get_space(name: str) -> SearchSpace:
    """The search space called ``name``; an unknown name is one clear error listing the known ones."""
    try:
        return SPACES[name]
    except KeyError:
        raise LightnetsError(f"unknown search space {name!r}; choose from {', '.join(SPACES)}") from None
