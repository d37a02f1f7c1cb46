"""Whether two query results are the same answer, and a vote among candidate SQL by their results.

One comparison serves evaluation (EX: is the prediction's result the gold's?) and the graph
(which candidate SQL agree?), so "the same answer" means the same thing in both. The rules are
the Spider test-suite evaluator's (see ``route_graph.evaluation.metrics`` for the EX details):
values are normalised (floats rounded to ``float_decimals`` places, integral floats become ints,
Decimals numbers, NULL equals only NULL, NaN equals NaN, strings compared exactly), and two
results match when some permutation of the predicted columns makes the rows equal as a multiset
(or as a list when order matters).

``vote_by_result`` groups candidates whose results match and picks the largest group: several
stages (or samples) that arrive at the same rows independently are more often right than one
that stands alone. Ties go to non-empty results, then to the group holding the latest candidate
in the order given (pipeline order: later stages saw more feedback).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from route_graph.errors import ConfigError

__all__ = [
    "NAN",
    "ResultVote",
    "Semantics",
    "answer_is_empty",
    "normalize_rows",
    "normalize_value",
    "results_match",
    "vote_by_result",
    "vote_rank",
]

Semantics = Literal["spider", "bird"]

_MAX_PERMUTATIONS = 20_000  # column permutations tried before giving up (only ties get here)


class _NaN:
    """Hashable stand-in for NaN, which is unequal to itself."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _NaN)

    def __hash__(self) -> int:
        return hash("route-graph-nan")

    def __repr__(self) -> str:
        return "NaN"


NAN = _NaN()


def normalize_value(value: Any, float_decimals: int = 6) -> Hashable:
    """Canonical, hashable form of one result value (see the module docstring for the rules)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return NAN if value.is_nan() else float(value)
        value = int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return NAN
        if math.isinf(value):
            return value
        rounded = round(value, float_decimals)
        return int(rounded) if rounded.is_integer() else rounded
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def normalize_rows(rows: Sequence[Sequence[Any]], float_decimals: int = 6) -> list[tuple]:
    """Every value of every row through ``normalize_value``."""
    return [tuple(normalize_value(v, float_decimals) for v in row) for row in rows]


def _column_permutations(gold: list[tuple], pred: list[tuple]) -> Iterator[tuple[int, ...]]:
    """Column orders of ``pred`` that could match ``gold``: gold column j may only come from a
    predicted column holding the same multiset of values (identity first, then the rest)."""
    width = len(gold[0])
    gold_cols = [Counter(row[j] for row in gold) for j in range(width)]
    pred_cols = [Counter(row[k] for row in pred) for k in range(width)]
    options = [[k for k in range(width) if pred_cols[k] == gold_cols[j]] for j in range(width)]
    for j, opts in enumerate(options):
        if j in opts:  # try "same position" first
            opts.remove(j)
            opts.insert(0, j)
    chosen: list[int] = []
    used: set[int] = set()

    def extend(j: int) -> Iterator[tuple[int, ...]]:
        if j == width:
            yield tuple(chosen)
            return
        for k in options[j]:
            if k not in used:
                chosen.append(k)
                used.add(k)
                yield from extend(j + 1)
                used.discard(k)
                chosen.pop()

    yield from extend(0)


def results_match(
    gold_rows: Sequence[Sequence[Any]],
    pred_rows: Sequence[Sequence[Any]],
    *,
    order_matters: bool = False,
    semantics: Semantics = "spider",
    float_decimals: int = 6,
) -> bool:
    """Whether two result sets are the same answer (Spider's or BIRD's rules, normalised values)."""
    gold = normalize_rows(gold_rows, float_decimals)
    pred = normalize_rows(pred_rows, float_decimals)
    if semantics == "bird":
        return set(gold) == set(pred)
    if semantics != "spider":
        raise ConfigError(f"Unknown EX semantics {semantics!r}; use 'spider' or 'bird'.")
    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    gold_counts = None if order_matters else Counter(gold)
    for tried, perm in enumerate(_column_permutations(gold, pred)):
        if tried >= _MAX_PERMUTATIONS:
            return False
        permuted = pred if perm == tuple(range(len(perm))) else [tuple(r[k] for k in perm) for r in pred]
        if order_matters:
            if permuted == gold:
                return True
        elif Counter(permuted) == gold_counts:
            return True
    return False


def answer_is_empty(rows: Sequence[Sequence[Any]]) -> bool:
    """No rows, or NULL in every cell: a result that answers nothing (NC repairs it, votes rank it last)."""
    return all(value is None for row in rows for value in row)


@dataclass(frozen=True)
class ResultVote:
    """Candidates grouped by matching results, best group first; ``winner`` is the chosen candidate."""

    groups: tuple[tuple[str, ...], ...]  # candidate names per group, each in the order given
    empty: tuple[bool, ...]  # per group: its result is empty (or all NULL)
    winner: str


def vote_rank(size: int, empty: bool, last: int) -> tuple[bool, int, int]:
    """Sort key of a vote group (highest wins): a non-empty result first, then size, then latest.

    An empty (or all-NULL) result is no evidence of agreement: wrong SQL agree on returning nothing
    far more often than right SQL agree on rows. Replayed on stored 400-question runs
    (``benchmarks/vote_replay.py``): ranking size first let two empty wrong answers outvote a right
    one 3 times and helped once (the gold result was empty) on the 1.5B model; on the 0.5B runs it
    changed no answer.
    """
    return (not empty, size, last)


def vote_by_result(
    candidates: Sequence[tuple[str, Sequence[Sequence[Any]]]], *, float_decimals: int = 6
) -> ResultVote:
    """Group ``(name, rows)`` candidates (in pipeline order) by ``results_match``; pick the best group.

    Best by ``vote_rank``: a non-empty result beats an empty (or all-NULL) one, then most members,
    then the group holding the candidate latest in the given order. The winner is that group's
    latest candidate. Rows are compared as multisets (row order ignored), columns up to permutation.
    """
    if not candidates:
        raise ValueError("vote_by_result needs at least one candidate.")
    names = [name for name, _ in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"Candidate names must be unique, got {names}.")
    groups: list[list[int]] = []
    for index, (_, rows) in enumerate(candidates):
        for group in groups:
            if results_match(candidates[group[0]][1], rows, float_decimals=float_decimals):
                group.append(index)
                break
        else:
            groups.append([index])
    empty = {id(g): answer_is_empty(candidates[g[0]][1]) for g in groups}
    groups.sort(key=lambda g: vote_rank(len(g), empty[id(g)], g[-1]), reverse=True)
    return ResultVote(
        groups=tuple(tuple(names[i] for i in g) for g in groups),
        empty=tuple(empty[id(g)] for g in groups),
        winner=names[groups[0][-1]],
    )
