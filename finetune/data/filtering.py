"""Noisy-correspondence filtering: drop training pairs whose gold SQL cannot be trusted.

ROUTE filters the training set before synthesis: a pair whose SQL fails, times out or (in the
judge's opinion) does not answer its question would teach every task something wrong. The
execution check is cheap and exact; the optional judge asks a model the NC question about the
gold SQL itself ("does this SQL answer the question?") and drops the pairs it rejects.
Every drop is reported with its reason.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from finetune.config import FilterConfig
from route_graph.errors import DatabaseError
from route_graph.evaluation.datasets import Example
from route_graph.linking import links_from_sql
from route_graph.sql.database import Database
from route_graph.sql.execute import execute_sql
from route_graph.views import ViewConfig, execution_feedback, parsing, stage_messages

__all__ = ["Dropped", "FilterReport", "check_gold", "filter_examples", "judge_pairs", "write_filtered_split"]


@dataclass(frozen=True)
class Dropped:
    """One dropped pair: why (``gold_error`` (fails, or is refused as not a read-only query),
    ``gold_timeout``, ``empty_result``, ``unparseable``, ``missing_database``,
    ``judge_incorrect``) and the evidence."""

    example_id: int
    db_id: str
    reason: str
    detail: str
    question: str
    sql: str


@dataclass
class FilterReport:
    """Kept examples, dropped ones with reasons, and how long it took."""

    kept: list[Example] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kept": len(self.kept),
            "dropped": len(self.dropped),
            "by_reason": dict(sorted(Counter(d.reason for d in self.dropped).items())),
            "seconds": round(self.seconds, 2),
            "dropped_pairs": [asdict(d) for d in self.dropped],
            "kept_ids": [e.id for e in self.kept],
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        return target


def _gold_problem(
    example: Example, open_db: Callable[[str], Database], view: ViewConfig, cfg: FilterConfig, timeout: float
) -> tuple[str, str] | None:
    """(reason, detail) when the pair's gold SQL cannot be trusted, else None."""
    try:
        db = open_db(example.db_id)
    except DatabaseError as exc:
        return "missing_database", str(exc)
    result = execute_sql(db, example.gold_sql, timeout_s=timeout, max_rows=view.max_rows)
    if not result.ok:
        reason = "gold_timeout" if result.error_kind == "timeout" else "gold_error"
        return reason, f"{result.error_kind}: {result.error}"
    if cfg.drop_empty and result.row_count == 0:
        return "empty_result", "the gold SQL returns no rows"
    if cfg.drop_unparseable and links_from_sql(example.gold_sql, db.schema, db.dialect) is None:
        return "unparseable", "sqlglot cannot parse the gold SQL (no schema-linking target)"
    return None


def check_gold(
    examples: Sequence[Example],
    open_db: Callable[[str], Database],
    view: ViewConfig,
    cfg: FilterConfig | None = None,
) -> FilterReport:
    """Execute every gold SQL once (read-only, time-limited); keep the pairs that run cleanly."""
    view = ViewConfig.of(view)
    cfg = cfg or FilterConfig()
    timeout = cfg.timeout_s or view.execution_timeout_s
    report = FilterReport()
    start = time.perf_counter()
    for example in examples:
        problem = _gold_problem(example, open_db, view, cfg, timeout)
        if problem is None:
            report.kept.append(example)
        else:
            report.dropped.append(Dropped(example.id, example.db_id, *problem, example.question, example.gold_sql))
    report.seconds = time.perf_counter() - start
    return report


def judge_pairs(
    examples: Sequence[Example],
    open_db: Callable[[str], Database],
    llm: BaseChatModel,
    view: ViewConfig,
    *,
    batch_size: int = 4,
) -> list[Dropped]:
    """Ask ``llm`` the NC question about each gold SQL; the pairs it calls incorrect are returned."""
    view = ViewConfig.of(view)
    dropped: list[Dropped] = []
    for begin in range(0, len(examples), max(1, batch_size)):
        chunk = examples[begin : begin + batch_size]
        batch = []
        for example in chunk:
            db = open_db(example.db_id)
            result = execute_sql(db, example.gold_sql, timeout_s=view.execution_timeout_s, max_rows=view.max_rows)
            feedback = execution_feedback(result, view)
            batch.append(stage_messages("nc", example.question, db, view, sql=example.gold_sql, feedback=feedback, hint=example.hint))
        answers = llm.batch(batch)
        for example, answer in zip(chunk, answers):
            verdict = parsing.parse_verdict(str(answer.content), example.gold_sql)
            if verdict.correct is False:
                detail = f"judge proposed: {verdict.sql}" if verdict.sql else "judge said incorrect"
                dropped.append(Dropped(example.id, example.db_id, "judge_incorrect", detail, example.question, example.gold_sql))
    return dropped


def filter_examples(
    examples: Sequence[Example],
    open_db: Callable[[str], Database],
    view: ViewConfig,
    cfg: FilterConfig | None = None,
    *,
    judge: BaseChatModel | None = None,
) -> FilterReport:
    """Execution check, then (if ``judge`` is given) the model judge on the survivors.

    ``view`` gives the execution limits and what the judge's prompt shows (a ``RouteConfig`` will do)."""
    cfg = cfg or FilterConfig()
    start = time.perf_counter()
    report = check_gold(examples, open_db, view, cfg)
    if judge is not None:
        rejected = judge_pairs(report.kept, open_db, judge, view, batch_size=cfg.judge_batch_size)
        gone = {d.example_id for d in rejected}
        report.kept = [e for e in report.kept if e.id not in gone]
        report.dropped.extend(rejected)
    report.seconds = time.perf_counter() - start
    return report


def write_filtered_split(
    split_path: str | os.PathLike[str], kept_ids: Sequence[int], out_path: str | os.PathLike[str]
) -> Path:
    """The original split file (same format, same record objects) with only the kept pairs."""
    records = json.loads(Path(split_path).read_text(encoding="utf-8"))
    keep = set(kept_ids)
    target = Path(out_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        json.dumps([r for i, r in enumerate(records) if i in keep], indent=1, ensure_ascii=False), encoding="utf-8"
    )
    return target
