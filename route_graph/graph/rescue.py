"""The rescue stage (``rescue``): a last resort when no candidate SQL executes.

First name guesses on every failing SQL, without a model (``repair.RESCUE_RULES``: the exact
re-qualification, then joining the table that owns a missing column, then the closest existing
name); then up to ``rescue_samples`` sampled repairs (NC's repair prompt on the full schema, with
the error). The first SQL that executes is the answer. It only replaces answers that fail (always
wrong), so it cannot break one.

Measured reason (400 valid questions, untuned 0.5B): 13% of final answers failed to execute
after draft, generate, NC repair (greedy: 0 of 105 taken) and CW; a failing answer is always
wrong, so any executing one can only gain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from route_graph.graph.calls import Meter
from route_graph.graph.context import RouteConfig
from route_graph.graph.generate import MAX_REQUALIFY_STEPS
from route_graph.graph.pipeline import Node, Pipeline
from route_graph.graph.stages import RESCUE
from route_graph.graph.state import RouteState, TraceEntry
from route_graph.repair import RESCUE_RULES
from route_graph.sql.result import ExecutionResult
from route_graph.views import execution_feedback, parsing, stage_prefill

__all__ = ["nothing_executes", "rescue"]


def rescue(pipe: Pipeline) -> Node:
    """The ``rescue`` node of ``pipe``."""

    def node(state: RouteState, runtime: Runtime[RouteConfig], config: RunnableConfig) -> dict[str, Any]:
        """Name guesses on every failing SQL, then sampled repairs; the first that executes wins."""
        cfg = pipe.settings(runtime)
        meter = Meter()
        entry: TraceEntry = {"stage": RESCUE.node, "proposed_sql": None, "accepted": False, "attempts": []}
        failing = [state.get("sql") or "", *(state.get("sql_by_stage") or {}).values(), state.get("draft_sql") or ""]
        failing += [e["proposed_sql"] for e in state.get("trace") or () if e.get("proposed_sql")]
        found: tuple[str, ExecutionResult] | None = None
        for sql in dict.fromkeys(s for s in failing if s):
            found = _guess_names(pipe, sql, pipe.execute(sql, cfg), cfg)
            entry["attempts"].append({"kind": "names", "from": sql, "sql": found[0] if found else None})
            if found:
                break
        current = ExecutionResult.from_dict(state.get("result") or {}) if state.get("result") else pipe.execute(None, cfg)
        feedback = execution_feedback(current, cfg.view())
        msgs = pipe.messages("nc_repair", state, cfg, sql=state.get("sql") or "", feedback=feedback)
        for _ in range(cfg.rescue_samples if found is None else 0):
            sql = parsing.parse_sql(
                pipe.model.ask(meter, msgs, stage_prefill("nc_repair", cfg.view()), cfg, config,
                               name="rescue.repair", temperature=cfg.sample_temperature)
            )
            result = pipe.execute(sql, cfg)
            if sql and not result.ok:
                found = _guess_names(pipe, sql, result, cfg)
            elif result.ok:
                found = (sql or "", result)
            entry["attempts"].append({"kind": "sample", "from": sql, "sql": found[0] if found else None})
            if found:
                break
        update: dict[str, Any] = {}
        if found:
            sql, result = found
            entry.update(proposed_sql=sql, accepted=True, **pipe.outcome(result))
            update = {"sql": sql, "result": result.to_dict(), "stage": RESCUE.node}
        entry.update(meter.cost())
        return {**update, "sql_by_stage": {RESCUE.sql_key: update.get("sql", state.get("sql") or "")}, "trace": [entry]}

    return node


def nothing_executes(state: Mapping[str, Any]) -> bool:
    """True when no candidate the finalize vote could pick has executed (rescue's condition)."""
    if (state.get("result") or {}).get("ok") or (state.get("draft_result") or {}).get("ok"):
        return False
    return not any(s.get("executed") for s in state.get("samples") or ())


def _guess_names(pipe: Pipeline, sql: str, result: ExecutionResult, cfg: RouteConfig) -> tuple[str, ExecutionResult] | None:
    """``repair.RESCUE_RULES``: ``join_owner_table`` and ``closest_name_fix`` after the exact re-qualification,
    one error at a time, up to ``MAX_REQUALIFY_STEPS`` steps; the executing SQL, or None."""
    current, current_result = sql, result
    for _ in range(MAX_REQUALIFY_STEPS):
        fixed = None
        for repair in RESCUE_RULES:  # exact first, then guesses
            fixed = fixed or repair(current, current_result.error, pipe.db.schema, pipe.db.dialect)
        if fixed is None or fixed == current:
            return None
        current, current_result = fixed, pipe.execute(fixed, cfg)
        if current_result.ok:
            return current, current_result
    return None
