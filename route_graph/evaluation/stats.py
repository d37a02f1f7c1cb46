"""How sure can we be that one variant beats another on the same questions?

EX differences on a few hundred questions are noisy. Two variants evaluated on the *same*
questions are compared per question (paired): the exact McNemar test looks only at the questions
where they disagree, and a seeded paired bootstrap gives a confidence interval for the EX gain.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PairedComparison", "mcnemar_exact", "paired_comparison", "wilson_interval"]


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (better than ±1.96·se for small n or extreme p)."""
    if n == 0:
        return (0.0, 1.0)
    p = hits / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b vs c discordant pairs (binomial, p = 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedComparison:
    """B versus A on the same questions: EX gain, disagreements, p-value, bootstrap interval."""

    n: int
    ex_a: float
    ex_b: float
    gain: float  # ex_b - ex_a
    only_b: int  # questions B gets right and A wrong
    only_a: int
    p_value: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_comparison(
    ids: Sequence[int],
    correct_a: Collection[int],
    correct_b: Collection[int],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Compare two variants scored on questions ``ids`` (``correct_*`` = ids each got right)."""
    n = len(ids)
    a = [int(i in correct_a) for i in ids]
    b = [int(i in correct_b) for i in ids]
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    diffs = [y - x for x, y in zip(a, b)]
    gain = sum(diffs) / n if n else 0.0
    rng = random.Random(seed)
    boots = sorted(sum(rng.choice(diffs) for _ in range(n)) / n for _ in range(resamples)) if n else [0.0]
    low = boots[int(0.025 * (len(boots) - 1))]
    high = boots[math.ceil(0.975 * (len(boots) - 1))]
    return PairedComparison(
        n=n,
        ex_a=sum(a) / n if n else 0.0,
        ex_b=sum(b) / n if n else 0.0,
        gain=gain,
        only_b=only_b,
        only_a=only_a,
        p_value=mcnemar_exact(only_b, only_a),
        ci_low=low,
        ci_high=high,
    )
