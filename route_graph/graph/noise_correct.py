"""MCP step 3, noise correction: the model sees its SQL with the execution feedback and may fix it.

Where execution already gives the verdict (the SQL fails, returns no rows or only NULLs), no
verdict is asked: the model is asked straight for a repair (``nc_repair``). SQL that returns rows
is judged by the model only under ``nc_verdict`` (off by default: measured not to pay with the
untuned model). Either way a fix is taken only if it executes.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from route_graph.graph.calls import Meter
from route_graph.graph.context import RouteConfig
from route_graph.graph.pipeline import Node, Pipeline
from route_graph.graph.stages import NOISE_CORRECT
from route_graph.graph.state import RouteState, TraceEntry
from route_graph.prompts import RepairProblem
from route_graph.results import answer_is_empty
from route_graph.sql.result import ExecutionResult
from route_graph.views import (
    execution_feedback,
    full_schema_text,
    parsing,
    repair_problem,
    stage_prefill,
)

__all__ = ["noise_correct"]


def noise_correct(pipe: Pipeline) -> Node:
    """The ``noise_correct`` node of ``pipe``."""

    def node(state: RouteState, runtime: Runtime[RouteConfig], config: RunnableConfig) -> dict[str, Any]:
        """MCP step 3: SQL that fails or returns nothing is repaired (``nc_repair``); SQL that returns
        rows is judged with its execution feedback. An executable fix wins."""
        cfg = pipe.settings(runtime)
        meter = Meter()
        current = ExecutionResult.from_dict(state["result"])
        view = cfg.view()
        feedback = execution_feedback(current, view)
        schema_text = full_schema_text(pipe.db, view)
        problem = repair_problem(current)
        if cfg.nc_repair and problem is not None:
            return _repair(pipe, state, cfg, config, meter, schema_text, feedback, problem)
        if not cfg.nc_verdict:
            skipped: TraceEntry = {
                "stage": NOISE_CORRECT.node, "mode": "skipped", "reason": "the SQL returns rows; nc_verdict is off",
                **meter.cost(),
            }
            return {"sql_by_stage": {NOISE_CORRECT.sql_key: state.get("sql") or ""}, "trace": [skipped]}
        msgs = pipe.messages("nc", state, cfg, sql=state.get("sql") or "", feedback=feedback, full_text=schema_text)
        answer = pipe.model.ask(meter, msgs, stage_prefill("nc", view), cfg, config, name="noise_correct.verdict")
        verdict = parsing.parse_verdict(answer, state.get("sql"))
        update: dict[str, Any] = {}
        entry: TraceEntry = {
            "stage": NOISE_CORRECT.node,
            "mode": "verdict",
            "verdict": {True: "correct", False: "incorrect", None: "unclear"}[verdict.correct],
            "proposed_sql": verdict.sql,
            "accepted": False,
        }
        if verdict.correct is False and verdict.sql:
            fixed = pipe.execute(verdict.sql, cfg)
            entry.update(pipe.outcome(fixed))
            if fixed.ok:
                entry["accepted"] = True
                update = {"sql": verdict.sql, "result": fixed.to_dict(), "stage": NOISE_CORRECT.node}
        entry.update(meter.cost())
        final_sql = update.get("sql", state.get("sql") or "")
        return {**update, "sql_by_stage": {NOISE_CORRECT.sql_key: final_sql}, "trace": [entry]}

    return node


def _repair(
    pipe: Pipeline,
    state: RouteState,
    cfg: RouteConfig,
    config: RunnableConfig,
    meter: Meter,
    schema_text: str,
    feedback: str,
    problem: RepairProblem,
) -> dict[str, Any]:
    """NC on SQL that fails, returns no rows or only NULLs: no verdict is asked (execution gave
    it); the repaired SQL is taken if it executes, and for an empty or NULL result only if it
    returns rows that are not all NULL."""
    msgs = pipe.messages(
        "nc_repair", state, cfg, sql=state.get("sql") or "", feedback=feedback, problem=problem, full_text=schema_text
    )
    sql = parsing.parse_sql(
        pipe.model.ask(meter, msgs, stage_prefill("nc_repair", cfg.view()), cfg, config, name="noise_correct.repair")
    )
    entry: TraceEntry = {
        "stage": NOISE_CORRECT.node,
        "mode": "repair",
        "problem": problem,
        "verdict": "repair",
        "proposed_sql": sql,
        "accepted": False,
    }
    update: dict[str, Any] = {}
    if sql:
        fixed = pipe.execute(sql, cfg)
        entry.update(pipe.outcome(fixed))
        if fixed.ok and (problem == "error" or not answer_is_empty(fixed.rows)):
            entry["accepted"] = True
            update = {"sql": sql, "result": fixed.to_dict(), "stage": NOISE_CORRECT.node}
    entry.update(meter.cost())
    final_sql = update.get("sql", state.get("sql") or "")
    return {**update, "sql_by_stage": {NOISE_CORRECT.sql_key: final_sql}, "trace": [entry]}
