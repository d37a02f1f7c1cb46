"""MCP step 2, generation: text-to-SQL on the schema reduced to the links (the full one without them).

Where execution already tells what is wrong, generate acts on it without asking the model: a
column qualified with the wrong alias ("no such column: T2.x" where exactly one joined table has
``x``) is re-qualified (``requalify_columns``, ``repair.requalify_column``), and a double-quoted
string literal the database reads as a column (``= "France"`` on PostgreSQL or DuckDB: Spider's
style, which a tuned model writes) becomes a string (``repair.quoted_string_fix``). The self-consistency
samples (the ``self_consistency`` extra) are drawn from this same prompt and re-qualified alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from route_graph import prompts
from route_graph.graph.calls import Meter
from route_graph.graph.context import RouteConfig
from route_graph.graph.pipeline import Node, Pipeline
from route_graph.graph.stages import GENERATE
from route_graph.graph.state import RouteState, TraceEntry
from route_graph.repair import quoted_string_fix, requalify_column
from route_graph.sql.result import ExecutionResult
from route_graph.views import parsing, stage_prefill

__all__ = ["MAX_REQUALIFY_STEPS", "generate", "generate_prompt", "requalify"]

#: A query can misqualify several columns; SQLite names one per error, so one per step.
MAX_REQUALIFY_STEPS = 3


def generate(pipe: Pipeline) -> Node:
    """The ``generate`` node of ``pipe``."""

    def node(state: RouteState, runtime: Runtime[RouteConfig], config: RunnableConfig) -> dict[str, Any]:
        """MCP step 2: text-to-SQL on the reduced schema (full schema when linking is off)."""
        cfg = pipe.settings(runtime)
        meter = Meter()
        msgs, links = generate_prompt(pipe, state, cfg)
        sql = parsing.parse_sql(
            pipe.model.ask(meter, msgs, stage_prefill("generate", cfg.view()), cfg, config, name="generate")
        )
        result = pipe.execute(sql, cfg)
        entry: TraceEntry = {
            "stage": GENERATE.node,
            "schema_tables": list(links) if links else "full",
            "proposed_sql": sql,
            "accepted": True,
            **pipe.outcome(result),
        }
        if cfg.requalify_columns and sql and not result.ok:
            repaired = requalify(pipe, sql, result, cfg)
            if repaired is not None:
                fixed_sql, fixed = repaired
                entry["requalified"] = {"sql": fixed_sql, "accepted": fixed.ok, **pipe.outcome(fixed)}
                if fixed.ok:
                    sql, result = fixed_sql, fixed
        entry.update(meter.cost())
        return {
            "sql": sql or "",
            "result": result.to_dict(),
            "stage": GENERATE.node,
            "sql_by_stage": {GENERATE.sql_key: sql or ""},
            "trace": [entry],
        }

    return node


def generate_prompt(
    pipe: Pipeline, state: Mapping[str, Any], cfg: RouteConfig
) -> tuple[list[prompts.Message], dict[str, list[str]] | None]:
    """Generate's TS prompt on the reduced schema (full without linking) and the links it used;
    the self-consistency samples are drawn from this same prompt (``state`` is then their task)."""
    links = state.get("links") if cfg.schema_linking else None
    return pipe.messages("generate", state, cfg, links=links), links


def requalify(pipe: Pipeline, sql: str, result: ExecutionResult, cfg: RouteConfig) -> tuple[str, ExecutionResult] | None:
    """Re-qualify wrongly aliased columns and unquote double-quoted literals, one error at a time;
    the last attempt (or None if the error was not one ``repair`` can fix exactly)."""
    current, current_result = sql, result
    for _ in range(MAX_REQUALIFY_STEPS):
        error, schema, dialect = current_result.error, pipe.db.schema, pipe.db.dialect
        fixed = requalify_column(current, error, schema, dialect) or quoted_string_fix(current, error, schema, dialect)
        if fixed is None:
            break
        current, current_result = fixed, pipe.execute(fixed, cfg)
        if current_result.ok:
            break
    return None if current == sql else (current, current_result)
