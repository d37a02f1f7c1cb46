"""Per-stage attribution: which MCP stage made an answer right or wrong, and what each stage cost.

The graph records the current SQL after every stage in ``sql_by_stage`` ("draft" = single-pass
SQL on the full schema, written during schema linking; then "generate", "noise_correct",
"continue_write"). A stage that did not run for a question keeps the previous stage's SQL, so
every question has an answer "after" every stage that exists in the run, and comparing
neighbouring stages counts the answers each stage fixed and broke.

Two views are derived from one MCP run:

* **stage view** (``stage_table``): EX of the SQL as it stands after each stage, exactly as in
  ``sql_by_stage``, plus the final answer (which can differ from continue_write's by the
  finalize step's vote among the candidates, or its fallback to an earlier executable one).
* **cut-off view** (``ablation_rows``): EX of the answer a pipeline *stopped* after a stage would
  have returned, i.e. that stage's SQL with the finalize fallback applied. Because routing up to a
  stage does not depend on later stages, cutting after "draft" is the single-pass baseline (same
  prompt as ``--mode single``), after "generate" is ``--stages sl``, after "noise_correct" is
  ``--stages sl,nc``; the final answer is full MCP. These are the cumulative rows of Table 4.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from route_graph.evaluation.metrics import ExecutionScorer
from route_graph.graph.stages import (
    GENERATE,
    RESCUE,
    SCHEMA_LINK,
    SELF_CONSISTENCY,
    STAGE_ALIASES,
)
from route_graph.graph.stages import STAGES as GRAPH_STAGES
from route_graph.linking import Links, links_from_sql, score_links
from route_graph.sql.database import Database
from route_graph.sql.schema import Schema

if TYPE_CHECKING:
    from route_graph.graph.state import TraceEntry

__all__ = [
    "STAGES",
    "TRACE_STAGES",
    "ablation_rows",
    "cost_summary",
    "cutoff_sql",
    "linking_summary",
    "question_attribution",
    "stage_sqls",
    "stage_table",
]

#: Answer checkpoints, in pipeline order: the graph's ``sql_by_stage`` keys, then "final" (the answer).
STAGES: tuple[str, ...] = (*(s.sql_key for s in GRAPH_STAGES if s.sql_key), "final")
#: Trace entry name -> checkpoint it produces; the sampled generations (the self_consistency extra)
#: join generate's.
TRACE_STAGES: dict[str, str] = {
    s.node: s.sql_key or GENERATE.sql_key for s in GRAPH_STAGES if s.sql_key or s is SELF_CONSISTENCY
}
#: Trace stages whose proposal is taken only when it passes (``accepted``).
_ACCEPTING = frozenset(s.node for s in GRAPH_STAGES if s.accepting)
_COST_KEYS = ("llm_calls", "input_tokens", "output_tokens", "seconds")


def stage_sqls(sql_by_stage: Mapping[str, str], final_sql: str | None) -> dict[str, str | None]:
    """SQL after each checkpoint; a stage that did not run inherits the previous one's SQL.

    Checkpoints before the first stage that ran are absent (e.g. no "draft" without schema linking).
    """
    out: dict[str, str | None] = {}
    current: str | None = None
    started = False
    for stage in STAGES[:-1]:
        if stage in sql_by_stage:
            current, started = sql_by_stage[stage] or "", True
        if started:
            out[stage] = current
    out["final"] = final_sql or ""
    return out


def _cost(entries: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    total = {k: 0.0 for k in _COST_KEYS}
    for entry in entries:
        for key in _COST_KEYS:
            total[key] += float(entry.get(key, 0) or 0)
    return {k: (round(v, 3) if k == "seconds" else int(v)) for k, v in total.items()}


def _predicted_links(output: Mapping[str, Any], schema: Schema) -> Links | None:
    """The reduced schema the generator saw; None when linking did not run. An empty link set
    means the graph fell back to the full schema, which is scored as such."""
    if not any(e.get("stage") == SCHEMA_LINK.node for e in output.get("trace") or ()):
        return None
    links = output.get("links") or {}
    if not links:
        return {t.name: [c.name for c in t.columns] for t in schema.tables}
    return {t: list(cols) for t, cols in links.items()}


def question_attribution(output: Mapping[str, Any], scorer: ExecutionScorer, db: Database) -> dict[str, Any]:
    """Everything attribution needs about one answered question, JSON-ready.

    Scores every distinct SQL the run produced (stage SQLs and every proposal in the trace) with
    ``scorer``, scores the schema links against the gold query's, and sums the trace's costs.
    """
    trace: list[TraceEntry] = list(output.get("trace") or [])
    stages = stage_sqls(output.get("sql_by_stage") or {}, output.get("sql"))
    candidates = list(stages.values()) + [e["proposed_sql"] for e in trace if e.get("proposed_sql") is not None]
    executions: dict[str, dict[str, Any]] = {}
    for sql in candidates:
        key = (sql or "").strip()
        if key in executions:
            continue
        outcome = scorer.score(key)
        executions[key] = {
            "status": outcome.status,
            "correct": outcome.correct,
            "executed": outcome.executed,
            "error_kind": outcome.error_kind,
        }
    link_scores: dict[str, Any] | None = None
    predicted = _predicted_links(output, db.schema)
    gold_links = links_from_sql(scorer.gold_sql, db.schema, db.dialect)
    if predicted is not None and gold_links is not None:
        scores = score_links(predicted, gold_links)
        link_scores = {
            "table_precision": scores.table_precision,
            "table_recall": scores.table_recall,
            "column_precision": scores.column_precision,
            "column_recall": scores.column_recall,
            "strict_recall": scores.strict_recall,
            "kept_tables": len(predicted),
            "kept_columns": sum(len(c) for c in predicted.values()),
            "total_tables": len(db.schema.tables),
            "total_columns": sum(len(t.columns) for t in db.schema.tables),
        }
    by_stage: dict[str, dict[str, float]] = {}
    for entry in trace:
        if entry.get("stage") in TRACE_STAGES:
            by_stage[entry["stage"]] = _cost([entry])
    return {
        "stage_sql": stages,
        "executions": executions,
        "links": output.get("links"),
        "gold_links": gold_links,
        "link_scores": link_scores,
        "cost": _cost(e for e in trace if e.get("stage") in TRACE_STAGES),
        "cost_by_stage": by_stage,
    }


# --------------------------------------------------------------------------- per-record views


def _execution(record: Mapping[str, Any], sql: str | None) -> Mapping[str, Any]:
    return (record.get("executions") or {}).get((sql or "").strip(), {})


def _correct_at(record: Mapping[str, Any], stage: str) -> bool | None:
    """EX of the SQL after ``stage`` (None if the stage is absent or the gold failed)."""
    stages = record.get("stage_sql") or {}
    if stage not in stages:
        return None
    if stage == "final":
        return record.get("correct")
    return _execution(record, stages[stage]).get("correct")


def cutoff_sql(record: Mapping[str, Any], stage: str) -> str | None:
    """The answer of a pipeline stopped after ``stage``: its SQL, or if that does not execute,
    the latest earlier proposal that did (the finalize step's fallback)."""
    stages = record.get("stage_sql") or {}
    if stage == "final":
        return record.get("pred_sql")
    if stage not in stages:
        return None
    current = stages[stage]
    if _execution(record, current).get("executed"):
        return current
    limit = STAGES.index(stage)
    earlier = [
        e for e in record.get("trace") or ()
        if e.get("stage") in TRACE_STAGES and STAGES.index(TRACE_STAGES[e["stage"]]) <= limit
    ]
    for entry in reversed(earlier):
        sql = entry.get("proposed_sql")
        if entry.get("executed") and sql and sql != current:
            return sql
    return current


def _scored(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Records that count for EX: the gold executed (graph failures count as wrong answers)."""
    return [r for r in records if r.get("status") != "gold_error"]


def _rescue_ran(records: Iterable[Mapping[str, Any]]) -> bool:
    return any(e.get("stage") == RESCUE.node for r in records for e in r.get("trace") or ())


def _has(record: Mapping[str, Any], stage: str) -> bool:
    """The checkpoint exists for this record; a crashed graph run has every checkpoint (all wrong)."""
    return stage == "final" or stage in (record.get("stage_sql") or {}) or record.get("status") == "graph_error"


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def stage_table(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per checkpoint: EX, execution-error rate, and answers fixed / broken vs the previous one."""
    scored = _scored(records)
    present = [s for s in STAGES if any(s in (r.get("stage_sql") or {}) for r in scored)]
    if not _rescue_ran(scored):  # a checkpoint every question inherits: only shown where it ran
        present = [s for s in present if s != "rescue"]
    rows: list[dict[str, Any]] = []
    previous: str | None = None
    for stage in present:
        have = [r for r in scored if _has(r, stage)]
        correct = sum(bool(_correct_at(r, stage)) for r in have)
        if stage == "final":
            failed = sum(not (r.get("ex") or {}).get("executed") for r in have)
        else:
            failed = sum(not _execution(r, (r.get("stage_sql") or {}).get(stage)).get("executed") for r in have)
        fixed = broken = changed = 0
        if previous is not None:
            for r in have:
                before, after = _correct_at(r, previous), _correct_at(r, stage)
                fixed += before is False and after is True
                broken += before is True and after is False
                sqls = r.get("stage_sql") or {}
                changed += (sqls.get(previous) or "").strip() != (sqls.get(stage) or "").strip()
        ran = accepted = None
        trace_name = next((t for t, s in TRACE_STAGES.items() if s == stage), None)
        if trace_name is not None:
            entries = [
                e for r in have for e in (r.get("trace") or ())
                if e.get("stage") == trace_name and e.get("mode") != "skipped"  # nc_verdict off: no call
            ]
            ran = len(entries)
            if trace_name in _ACCEPTING:
                accepted = sum(bool(e.get("accepted")) for e in entries)
        rows.append(
            {
                "stage": stage,
                "n": len(have),
                "correct": correct,
                "ex": _rate(correct, len(have)),
                "exec_errors": failed,
                "exec_error_rate": _rate(failed, len(have)),
                "vs": previous,
                "fixed": fixed if previous else None,
                "broken": broken if previous else None,
                "changed": changed if previous else None,
                "ran": ran,
                "accepted": accepted,
            }
        )
        previous = stage
    return rows


def _ablation_plan(stages: Iterable[str], rescue: bool = False) -> list[tuple[str, str, str]]:
    """(label, checkpoint, meaning) rows that a run with ``stages`` switched on can yield; with
    ``rescue`` (the run's rescue stage ran) the full MCP row is split into before/after rescue."""
    enabled = {s.strip().lower() for s in stages if s.strip()}
    plan: list[tuple[str, str, str]] = []
    if "sl" in enabled:
        plan.append(("single-pass", "draft", "one TS prompt on the full schema: the MCP draft, same prompt as --mode single"))
        plan.append(("+SL", "generate", "TS on the schema reduced by schema linking; = --stages sl"))
        label = "+SL"
    else:
        plan.append(("single-pass", "generate", "one TS prompt on the full schema; = --mode single"))
        label = ""
    if "nc" in enabled:
        label += "+NC"
        plan.append((label, "noise_correct", f"then noise correction with execution feedback; = --stages {_names(enabled & {'sl', 'nc'})}"))
    if "cw" in enabled:
        label += "+CW"
        full = " (full MCP)" if enabled >= {"sl", "nc", "cw"} else ""
        cw = f"then continuation writing for failing/hard SQL: the run's answer (--stages {_names(enabled)})"
        if rescue:
            plan.append((label, "continue_write", cw.replace("the run's answer", "before rescue")))
            label, cw = label + "+rescue", "then, when nothing executes, name guesses and sampled repairs: the run's answer"
        plan.append((label + full, "final", cw))
    return plan


def _names(stages: set[str]) -> str:
    return ",".join(s for s in STAGE_ALIASES if s in stages)


def ablation_rows(records: Sequence[Mapping[str, Any]], stages: Iterable[str] = ("sl", "nc", "cw")) -> list[dict[str, Any]]:
    """Table-4-style cumulative rows from one run with ``stages`` on (see the module docstring)."""
    scored = _scored(records)
    rows = []
    rescued = _rescue_ran(scored)
    for label, stage, description in _ablation_plan(stages, rescue=rescued):
        if not scored or not any(stage == "final" or stage in (r.get("stage_sql") or {}) for r in scored):
            continue
        correct_ids: list[int] = []
        executed = 0
        for r in scored:
            if not _has(r, stage) or r.get("status") == "graph_error":
                continue
            if stage == "final":
                ok, ran = r.get("correct"), (r.get("ex") or {}).get("executed")
            else:
                execution = _execution(r, cutoff_sql(r, stage))
                ok, ran = execution.get("correct"), execution.get("executed")
            executed += bool(ran)
            if ok:
                correct_ids.append(int(r["id"]))
        rows.append(
            {
                "variant": label,
                "checkpoint": stage,
                "description": description,
                "n": len(scored),
                "correct": len(correct_ids),
                "ex": _rate(len(correct_ids), len(scored)),
                "executable": _rate(executed, len(scored)),
                "correct_ids": sorted(correct_ids),
            }
        )
    return rows


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def linking_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Mean schema-linking precision/recall (tables, columns), strict-recall rate, schema kept.

    Questions whose gold SQL fails are left out: their gold links are not trustworthy either.
    """
    scores = [r["link_scores"] for r in records if r.get("link_scores") and r.get("status") != "gold_error"]
    if not scores:
        return None
    out: dict[str, Any] = {"n": len(scores)}
    for key in ("table_precision", "table_recall", "column_precision", "column_recall"):
        out[key] = _mean([s[key] for s in scores])
    out["strict_recall"] = _mean([float(s["strict_recall"]) for s in scores])
    out["columns_kept"] = _mean([s["kept_columns"] / s["total_columns"] for s in scores if s.get("total_columns")])
    return out


def cost_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean model calls, tokens and seconds per question, overall and per trace stage.

    Per-stage means are over all questions (a stage that did not run costs 0 there), so they add
    up to the per-question total; ``ran`` says for how many questions the stage ran.
    """
    n = len(records)
    if not n:
        return {"n": 0, "per_question": {}, "by_stage": {}}
    per_question = {k: sum(float((r.get("cost") or {}).get(k, 0)) for r in records) / n for k in _COST_KEYS}
    per_question["wall_s"] = sum(float(r.get("wall_s") or 0) for r in records) / n
    by_stage: dict[str, dict[str, float]] = {}
    for stage in TRACE_STAGES:
        costs = [(r.get("cost_by_stage") or {}).get(stage) for r in records]
        ran = [c for c in costs if c]
        if not ran:
            continue
        by_stage[stage] = {k: sum(float(c.get(k, 0)) for c in ran) / n for k in _COST_KEYS}
        by_stage[stage]["ran"] = len(ran)
    return {"n": n, "per_question": per_question, "by_stage": by_stage}
