"""NC records from the model's own answers: sample TS answers, label them by execution.

Rule-based corruptions teach what a *plausible* mistake looks like; the model's own sampled SQL
teaches its *actual* mistakes (and its own style of correct SQL). Each example's TS prompt (the
linked-schema generation prompt MCP uses) is answered with temperature > 0; the answer is
executed and compared with the gold (EX, Spider semantics); the NC record then shows that SQL
and its execution feedback, with "correct" or "incorrect" + the gold as the target.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel

from finetune.config import SynthConfig
from finetune.data.records import Record
from finetune.data.synthesis import gold_sql_of
from route_graph import prompts
from route_graph.evaluation.datasets import Example
from route_graph.evaluation.metrics import gold_order_matters, results_match
from route_graph.linking import links_from_sql
from route_graph.rendering import recall_first_links
from route_graph.sql.database import Database
from route_graph.sql.execute import execute_sql
from route_graph.views import (
    ViewConfig,
    execution_feedback,
    parsing,
    question_values,
    stage_messages,
)

__all__ = ["SampleReport", "sample_nc_records"]


@dataclass
class SampleReport:
    """How the model's sampled answers were labelled."""

    counts: Counter = field(default_factory=Counter)  # correct / incorrect / no_sql / gold_error
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items())), "seconds": round(self.seconds, 1)}


def sample_nc_records(
    examples: Sequence[Example],
    open_db: Callable[[str], Database],
    llm: BaseChatModel,
    view: ViewConfig,
    cfg: SynthConfig,
    report: SampleReport | None = None,
) -> Iterator[Record]:
    """NC records (variants ``model:correct`` / ``model:incorrect``) from ``llm``'s TS answers.

    ``view`` decides what the prompts show (a ``RouteConfig`` gives its ``view()``'s fields)."""
    view = ViewConfig.of(view)
    report = report if report is not None else SampleReport()
    start = time.perf_counter()
    size = max(1, cfg.sample_batch_size)
    for begin in range(0, len(examples), size):
        chunk = examples[begin : begin + size]
        prompts_batch = []
        for example in chunk:
            db = open_db(example.db_id)
            links = links_from_sql(gold_sql_of(example, cfg), db.schema, db.dialect) or {}
            links, _ = recall_first_links(db, view, links, f"{example.question} {example.hint or ''}")
            values = question_values(db, view, example.question, example.hint)
            prompts_batch.append(
                stage_messages("generate", example.question, db, view, links=links or None, hint=example.hint, values=values)
            )
        answers = llm.batch(prompts_batch)
        for example, answer in zip(chunk, answers):
            db = open_db(example.db_id)
            gold = gold_sql_of(example, cfg)
            sql = parsing.parse_sql(str(answer.content))
            if not sql:
                report.counts["no_sql"] += 1
                continue
            timeout = cfg.timeout_s or view.execution_timeout_s
            gold_result = execute_sql(db, gold, timeout_s=timeout, max_rows=view.max_rows)
            if not gold_result.ok:
                report.counts["gold_error"] += 1
                continue
            result = execute_sql(db, sql, timeout_s=timeout, max_rows=view.max_rows)
            correct = result.ok and results_match(
                gold_result.rows, result.rows, order_matters=gold_order_matters(gold, db.dialect)
            )
            report.counts["correct" if correct else "incorrect"] += 1
            prompt = stage_messages(
                "nc", example.question, db, view, sql=sql, feedback=execution_feedback(result, view), hint=example.hint,
                values=question_values(db, view, example.question, example.hint),
            )
            answer_text = prompts.nc_completion(correct, None if correct else gold)
            variant = "model:correct" if correct else "model:incorrect"
            yield Record.of("nc", example.db_id, example.id, variant, prompt, answer_text)
        report.seconds = time.perf_counter() - start
