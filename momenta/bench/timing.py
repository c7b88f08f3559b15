"""Round-robin timing, shared by the step and the training-loop benchmarks.

On a shared VM speed drifts within a minute, so variants are never timed one after the
other: round i runs every variant once before round i+1 runs any, and each reported time
is a median over the rounds after warm-up. Ratios between variants of one run are then
stable (self-vs-self 0.95–1.04) even when absolute times are not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

#: one go of a variant: ``run(i)`` does round i and returns the seconds of each named phase
Run = Callable[[int], Mapping[str, float]]


@dataclass
class Variant:
    """An implementation under test: its label, what one round runs, the times it took."""

    label: str
    run: Run
    first: dict[str, float] = field(default_factory=dict)  # round 0's seconds (compilation included)
    times: dict[str, list[float]] = field(default_factory=dict)  # seconds of the rounds after warm-up

    def median_ms(self, phase: str = "step") -> float:
        """The median of ``phase`` over the timed rounds, in milliseconds."""
        return statistics.median(self.times[phase]) * 1e3


def timed(fn: Callable[[], object], phase: str = "step", repeat: int = 1) -> Run:
    """A :data:`Run` that calls ``fn`` ``repeat`` times and reports seconds per call."""

    def run(_: int) -> dict[str, float]:
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        return {phase: (time.perf_counter() - start) / repeat}

    return run


def round_robin(variants: Sequence[Variant], rounds: int, warmup: int) -> None:
    """Run ``warmup + rounds`` rounds, each variant once a round in order; keep round 0's
    times in ``first`` and the times of the last ``rounds`` in ``times``."""
    for i in range(warmup + rounds):
        for v in variants:
            phases = v.run(i)
            if i == 0:
                v.first = dict(phases)
            if i >= warmup:
                for phase, seconds in phases.items():
                    v.times.setdefault(phase, []).append(seconds)
