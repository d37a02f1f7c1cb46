"""Execution accuracy (EX) and BIRD's valid efficiency score (VES).

EX follows the public evaluators, with one documented choice per point where they differ:

* ``semantics="spider"`` (default; the Spider test-suite evaluator's ``result_eq``): both results
  empty => match; otherwise same row count, same column count, and some permutation of the
  predicted *columns* makes the rows equal as a multiset (duplicates count), or as a list when the
  gold query has a top-level ORDER BY. Column permutation is tolerated because the official
  script tolerates it (``SELECT a, b`` vs ``SELECT b, a`` answer the same question).
* ``semantics="bird"`` (BIRD's ``set(pred) == set(gold)``): rows compared as sets (order and
  duplicates ignored), column order significant.

Values are normalised before comparing (the official scripts compare raw Python values, where
``1 == 1.0`` already holds): floats are rounded to ``float_decimals`` (default 6) decimal places so
that ``AVG(x)`` and ``SUM(x) * 1.0 / COUNT(x)`` agree despite last-bit differences (0.99999999 and
1 compare equal; 2.67 and 2.6666667 do not), integral floats become ints, Decimals become numbers,
NULL equals only NULL, NaN equals NaN, strings are compared exactly (``'1'`` is not ``1``).

A gold query that fails (error, timeout) yields status ``gold_error``: the example is reported
separately and left out of EX, since the model cannot be blamed for it.

VES (BIRD's ``evaluation_ves.py``): for a correct prediction, time gold and prediction
``repeats`` times alternately, take the ratios gold_time / pred_time, drop ratios outside
mean ± 3 std, and average; the reward is ``sqrt(ratio)``. Incorrect predictions score 0. BIRD
times only ``cursor.execute``; we time execute + fetch (the whole query's work) on the database's
read-only connection, and only SQL that already passed the guarded executor is timed.
"""

from __future__ import annotations

import math
import sqlite3
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from route_graph.errors import ConfigError
from route_graph.results import (
    Semantics,
    normalize_rows,
    normalize_value,
    results_match,
)
from route_graph.sql.execute import execute_sql
from route_graph.sql.result import ExecutionResult

if TYPE_CHECKING:
    from route_graph.sql.database import Database

__all__ = [
    "ExOutcome",
    "ExStatus",
    "ExecutionScorer",
    "ScoringOptions",
    "Semantics",
    "compare_results",
    "gold_order_matters",
    "normalize_rows",
    "normalize_value",
    "results_match",
    "time_query",
    "ves_ratio",
    "ves_reward",
]

ExStatus = Literal["correct", "wrong", "pred_error", "gold_error"]


def gold_order_matters(sql: str, dialect: str = "sqlite") -> bool:
    """True when the query's top-level SELECT (or set operation) has an ORDER BY.

    An ORDER BY inside a subquery does not order the answer, so it does not count. SQL that
    sqlglot cannot parse is scanned token by token for ORDER BY outside parentheses.
    """
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except (SqlglotError, ValueError, RecursionError):
        tree = None
    if tree is not None:
        while isinstance(tree, (exp.Subquery, exp.Paren)) and isinstance(tree.this, exp.Expression):
            tree = tree.this
        return tree.args.get("order") is not None
    try:
        tokens = sqlglot.Dialect.get_or_raise(dialect).tokenize(sql)
    except (SqlglotError, ValueError):
        return False
    depth = 0
    for token in tokens:
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
        elif token.token_type == TokenType.ORDER_BY and depth == 0:
            return True
    return False


@dataclass(frozen=True)
class ExOutcome:
    """EX verdict for one predicted SQL: ``correct`` is None when the gold itself failed."""

    status: ExStatus
    correct: bool | None
    executed: bool
    error_kind: str | None = None  # rejected / timeout / error / no_sql (prediction), gold: see gold_error
    error: str | None = None
    gold_error: str | None = None
    truncated: bool = False  # a result hit max_rows, so only a prefix was compared
    gold_empty: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_results(
    gold: ExecutionResult,
    pred: ExecutionResult | None,
    *,
    order_matters: bool,
    semantics: Semantics = "spider",
    float_decimals: int = 6,
) -> ExOutcome:
    """EX outcome of one prediction, given both execution results (``pred`` None = no SQL)."""
    if not gold.ok:
        return ExOutcome(
            status="gold_error", correct=None, executed=bool(pred and pred.ok),
            error_kind=None if pred is None or pred.ok else pred.error_kind,
            gold_error=f"{gold.error_kind}: {gold.error}",
        )
    gold_empty = gold.row_count == 0
    if pred is None:
        return ExOutcome("pred_error", False, False, "no_sql", "no SQL was produced", gold_empty=gold_empty)
    if not pred.ok:
        return ExOutcome("pred_error", False, False, pred.error_kind, pred.error, gold_empty=gold_empty)
    match = results_match(
        gold.rows, pred.rows, order_matters=order_matters, semantics=semantics, float_decimals=float_decimals
    )
    return ExOutcome(
        status="correct" if match else "wrong",
        correct=match,
        executed=True,
        truncated=gold.truncated or pred.truncated,
        gold_empty=gold_empty,
    )


# --------------------------------------------------------------------------- VES


def ves_ratio(gold_times: Sequence[float], pred_times: Sequence[float]) -> float:
    """BIRD's time ratio: mean of gold/pred ratios after dropping those beyond mean ± 3 std."""
    if not gold_times or len(gold_times) != len(pred_times):
        raise ValueError("ves_ratio needs equally many (>= 1) gold and predicted timings")
    ratios = [g / max(p, 1e-9) for g, p in zip(gold_times, pred_times)]
    mean = statistics.fmean(ratios)
    std = statistics.pstdev(ratios)
    kept = [r for r in ratios if mean - 3 * std < r < mean + 3 * std]
    # BIRD's script divides by zero when every ratio is identical (std 0); all of them are valid then.
    return statistics.fmean(kept or ratios)


def ves_reward(ratio: float) -> float:
    """Per-question VES reward: sqrt of the time ratio (0 for an incorrect prediction)."""
    return math.sqrt(ratio) if ratio > 0 else 0.0


def _time_sqlite(conn: sqlite3.Connection, sql: str, timeout_s: float) -> float | None:
    deadline = time.monotonic() + timeout_s
    old_factory = conn.text_factory
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
    try:
        start = time.perf_counter()
        conn.execute(sql).fetchall()
        return time.perf_counter() - start
    except sqlite3.Error:
        return None
    finally:
        conn.set_progress_handler(None, 0)
        conn.text_factory = old_factory
        conn.rollback()


def time_query(db: Database, sql: str, *, timeout_s: float = 10.0) -> float | None:
    """Seconds one run of an already-validated query takes (None if it fails or times out).

    On a SQLite connection that is read-only (``PRAGMA query_only``, as ``open_database`` opens
    files) the query is timed directly, so the guard's parse time does not dilute the ratio;
    anything else is timed through the guarded executor.
    """
    engine = getattr(db, "engine", None)
    if engine is not None and engine.dialect.name == "sqlite":
        pooled = engine.raw_connection()
        try:
            conn = pooled.driver_connection
            if isinstance(conn, sqlite3.Connection) and conn.execute("PRAGMA query_only").fetchone()[0]:
                return _time_sqlite(conn, sql, timeout_s)
        finally:
            pooled.close()
    result = execute_sql(db, sql, timeout_s=timeout_s, max_rows=10_000_000)
    return result.elapsed_s if result.ok else None


# --------------------------------------------------------------------------- per-example scorer


@dataclass(frozen=True)
class ScoringOptions:
    """How predictions are executed and compared (part of a run's settings)."""

    timeout_s: float = 10.0
    max_rows: int = 100_000
    semantics: Semantics = "spider"
    float_decimals: int = 6
    ves_repeats: int = 0  # 0 = no VES

    def __post_init__(self) -> None:
        if self.semantics not in ("spider", "bird"):
            raise ConfigError(f"Unknown EX semantics {self.semantics!r}; use 'spider' or 'bird'.")
        if self.timeout_s <= 0 or self.max_rows < 1 or self.ves_repeats < 0 or self.float_decimals < 0:
            raise ConfigError(
                "Scoring options out of range: timeout_s > 0, max_rows >= 1, ves_repeats >= 0, "
                f"float_decimals >= 0 (got {self})."
            )


class ExecutionScorer:
    """Scores any number of candidate SQLs for one question against its gold, executing each once."""

    def __init__(self, db: Database, gold_sql: str, options: ScoringOptions | None = None) -> None:
        self.db = db
        self.gold_sql = gold_sql
        self.options = options or ScoringOptions()
        self.gold = self._execute(gold_sql)
        self.order_matters = gold_order_matters(gold_sql, db.dialect)
        self._cache: dict[str, tuple[ExOutcome, ExecutionResult | None]] = {}

    def _execute(self, sql: str) -> ExecutionResult:
        return execute_sql(self.db, sql, timeout_s=self.options.timeout_s, max_rows=self.options.max_rows)

    def score(self, sql: str | None) -> ExOutcome:
        """EX outcome of ``sql`` (None or blank = the model produced no SQL)."""
        key = (sql or "").strip()
        if key not in self._cache:
            result = self._execute(key) if key else None
            outcome = compare_results(
                self.gold,
                result,
                order_matters=self.order_matters,
                semantics=self.options.semantics,
                float_decimals=self.options.float_decimals,
            )
            self._cache[key] = (outcome, result)
        return self._cache[key][0]

    def ves(self, sql: str | None) -> float | None:
        """VES reward of ``sql``: sqrt(time ratio) if correct, 0 if not, None if VES is off or gold failed."""
        repeats = self.options.ves_repeats
        outcome = self.score(sql)
        if repeats <= 0 or outcome.correct is None:
            return None
        if not outcome.correct or not sql:
            return 0.0
        gold_times: list[float] = []
        pred_times: list[float] = []
        for _ in range(repeats):
            pred_t = time_query(self.db, sql.strip(), timeout_s=self.options.timeout_s)
            gold_t = time_query(self.db, self.gold_sql, timeout_s=self.options.timeout_s)
            if pred_t is None or gold_t is None:
                return None
            pred_times.append(pred_t)
            gold_times.append(gold_t)
        return ves_reward(ves_ratio(gold_times, pred_times))
