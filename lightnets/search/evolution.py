"""MnasNet's latency-aware reward and regularized (aging) evolution over a search space.

The reward ``ACC(m) * (LAT(m) / T) ** w`` is a soft constraint: one search yields good models on both sides
of the target ``T`` instead of only those under it. MnasNet uses ``w = -0.07``; MobileNetV3 found
``-0.15`` better for small models, where accuracy changes far more with latency. MnasNet trained an RNN
controller with reinforcement learning and noted that other strategies would do; this module uses
regularized evolution (Real et al. 2019), which reaches the same quality with fewer samples and no
controller to train: keep a population, mutate the best of a random handful, retire the oldest.
"""

from __future__ import annotations

import json
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import LightnetsError
from ..models.mnas_space import Arch
from .space import SearchSpace


def reward(accuracy: float, latency_ms: float, target_ms: float, w: float = -0.07, w_over: float | None = None
           ) -> float:
    """``accuracy * (latency / target) ** exponent``, the exponent ``w`` at or under the target and
    ``w_over`` (default: ``w`` as well, MnasNet's choice) over it."""
    if latency_ms <= 0 or target_ms <= 0:
        raise LightnetsError(f"latency and target must be > 0 ms, got {latency_ms} and {target_ms}")
    exponent = w if latency_ms <= target_ms or w_over is None else w_over
    return accuracy * (latency_ms / target_ms) ** exponent


def arch_key(arch: Arch) -> str:
    """A canonical string for an architecture, so the same network is trained only once."""
    return json.dumps(arch.to_dict(), sort_keys=True)


@dataclass
class Candidate:
    """One evaluated architecture; ``parent`` is the index it was mutated from (None: sampled at random);
    ``seconds`` is the wall time its accuracy took (0 when an earlier evaluation was reused)."""

    index: int
    arch: Arch
    accuracy: float
    latency_ms: float
    reward: float
    parent: int | None
    seconds: float

    def record(self) -> dict[str, Any]:
        return {"index": self.index, "accuracy": self.accuracy, "latency_ms": self.latency_ms,
                "reward": self.reward, "parent": self.parent, "seconds": self.seconds, "arch": self.arch.to_dict()}


def check_settings(population: int, sample: int, cycles: int) -> None:
    if population < 1 or cycles < 0 or not 1 <= sample <= population:
        raise LightnetsError(f"need population >= 1, cycles >= 0 and 1 <= sample <= population; got population "
                             f"{population}, sample {sample}, cycles {cycles}")


def regularized_evolution(space: SearchSpace, accuracy: Callable[[Arch], float], latency: Callable[[Arch], float],
                          *, target_ms: float, w: float = -0.07, w_over: float | None = None, population: int = 10,
                          sample: int = 3, cycles: int = 20, seed: int = 0, known: dict[str, float] | None = None,
                          on_candidate: Callable[[Candidate], None] = lambda c: None) -> list[Candidate]:
    """Evaluate ``population`` random members, then for ``cycles`` rounds: draw ``sample`` members of the
    population at random, mutate the one with the highest reward, evaluate the child, add it and drop
    the oldest member. Returns every evaluated candidate in order (``population + cycles`` of them).

    ``accuracy`` and ``latency`` score one architecture; ``known`` maps ``arch_key`` to accuracies
    already measured (a resumed search), and an architecture seen before reuses its accuracy. With the
    same ``seed`` and deterministic scores the search is repeatable.
    """
    check_settings(population, sample, cycles)
    rng = random.Random(seed)
    scores = dict(known or {})
    history: list[Candidate] = []

    def evaluate(arch: Arch, parent: int | None) -> Candidate:
        key, start = arch_key(arch), time.perf_counter()
        if key not in scores:
            scores[key] = accuracy(arch)
        seconds = time.perf_counter() - start
        lat = latency(arch)
        candidate = Candidate(len(history), arch, scores[key], lat, reward(scores[key], lat, target_ms, w, w_over),
                              parent, seconds)
        history.append(candidate)
        on_candidate(candidate)
        return candidate

    alive = deque(evaluate(space.sample(rng), None) for _ in range(population))
    for _ in range(cycles):
        parent = max(rng.sample(list(alive), sample), key=lambda c: c.reward)
        alive.append(evaluate(space.mutate(parent.arch, rng), parent.index))
        alive.popleft()
    return history
