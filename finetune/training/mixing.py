"""Task mixing: how many records of each task go into training, filled lazily past over-long ones.

Paper Table 3 compares multitask data with text-to-SQL-only data at the same budget; that is a
matter of ``task_ratios`` (``{"ts": 1}`` vs all four) and ``max_records``. Quotas are computed
from the ratios; each task's records are shuffled (seeded) and taken in order, skipping the ones
the encoder rejects (too long), and repeated only when a ratio asks for more than exist.

A ratio's key is a task (``"nc"``) or a task and a variant (``"nc/model_incorrect"``): a record
whose ``task/variant`` is a key goes to that pool, any other to its task's pool. So one phase can
weigh mined NC records (``finetune.data.mining``) apart from the synthesized ones, or replay a
share of the view an earlier phase trained on (``"ts/full_schema"`` beside ``"ts/linked_schema"``)
while the other view's pool keeps the seeded order a single-view phase took its slice from.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from finetune.data.records import Record
from route_graph.errors import ConfigError

__all__ = ["MixReport", "mix_key", "mix_records", "task_quotas"]

T = TypeVar("T")


@dataclass
class MixReport:
    """What went into the training set, per task: quota, taken, dropped as too long, repeats."""

    available: dict[str, int] = field(default_factory=dict)
    quota: dict[str, int] = field(default_factory=dict)
    taken: dict[str, int] = field(default_factory=dict)
    too_long: dict[str, int] = field(default_factory=dict)
    repeated: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: dict(sorted(v.items())) for k, v in self.__dict__.items()}


def mix_key(record: Record, ratios: dict[str, float] | None) -> str:
    """The pool ``record`` is drawn from: its ``task/variant`` where ``ratios`` names that, else its task."""
    if ratios:
        specific = f"{record.task}/{record.variant}"
        if specific in ratios:
            return specific
    return record.task


def task_quotas(
    available: dict[str, int], ratios: dict[str, float] | None, max_records: int | None
) -> dict[str, int]:
    """Records per task. No ratios: the synthesized proportions. Ratios: their shares of a total
    that is ``max_records`` or, when None, the largest total no task must repeat records for."""
    if ratios is None:
        shares = {t: float(n) for t, n in available.items() if n}
    else:
        missing = [t for t, r in ratios.items() if r > 0 and not available.get(t)]
        if missing:
            raise ConfigError(f"task_ratios asks for {missing} but the records hold none; synthesize them first.")
        shares = {t: float(r) for t, r in ratios.items() if r > 0}
    if not shares:
        raise ConfigError("Nothing to train on: no records (or every task ratio is 0).")
    weight = sum(shares.values())
    if max_records is None:
        total = min(available[t] * weight / s for t, s in shares.items())
    else:
        total = float(max_records)
    quotas = {t: int(total * s / weight) for t, s in shares.items()}
    # Hand out the rounding remainder so the quotas add up to the total.
    remainder = round(total) - sum(quotas.values())
    largest_fractions = sorted(shares, key=lambda t: (total * shares[t] / weight) % 1, reverse=True)
    for t in largest_fractions[: max(0, remainder)]:
        quotas[t] += 1
    return dict(sorted(quotas.items()))


def mix_records(
    records: Sequence[Record],
    ratios: dict[str, float] | None,
    max_records: int | None,
    encode: Callable[[Record], T | None],
    *,
    seed: int = 0,
    skip: int = 0,
) -> tuple[list[tuple[Record, T]], MixReport]:
    """Pick records per quota, encoding each (None = rejected); return them shuffled, with a report.

    ``skip`` drops the first records of each task's seeded order, ``random.Random(seed)``'s shuffle
    of that task's records (before quotas are computed), so that a later phase takes the records an
    earlier one left. For a single-task mix that order is exactly the one ``skip=0`` takes from, so
    phase A (``max_records=N``) and phase B (``skip=N``) split the records without overlap.
    """
    by_task: dict[str, list[Record]] = {}
    for record in records:
        by_task.setdefault(mix_key(record, ratios), []).append(record)
    if skip:
        for task, pool in by_task.items():
            random.Random(seed).shuffle(pool)
            del pool[:skip]
        by_task = {t: v for t, v in by_task.items() if v}
    report = MixReport(available={t: len(v) for t, v in by_task.items()})
    report.quota = task_quotas(report.available, ratios, max_records)
    rng = random.Random(seed)
    chosen: list[tuple[Record, T]] = []
    for task, quota in report.quota.items():
        pool = list(by_task[task])
        if not skip:
            rng.shuffle(pool)
        accepted: list[tuple[Record, T]] = []
        too_long = 0
        for record in pool:
            if len(accepted) >= quota:
                break
            encoded = encode(record)
            if encoded is None:
                too_long += 1
            else:
                accepted.append((record, encoded))
        taken = list(accepted)
        while accepted and len(taken) < quota:  # a ratio above what exists: repeat, reshuffled
            extra = list(accepted)
            rng.shuffle(extra)
            taken.extend(extra[: quota - len(taken)])
        report.taken[task] = len(taken)
        report.too_long[task] = too_long
        report.repeated[task] = len(taken) - len(accepted)
        chosen.extend(taken)
    rng.shuffle(chosen)
    return chosen, report
