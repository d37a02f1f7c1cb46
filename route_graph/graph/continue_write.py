"""MCP step 4, continuation writing: the model completes a truncated SQL (``continuation_prefix``).

It runs for SQL that still fails or is hard (h(s, d) > ``difficulty_threshold``, ``routes``). On
the full schema (``cw_full_schema``), as the ROUTE reference does: that is how it recovers a column
that schema linking dropped. The continuation is kept if it executes (and, for SQL that executed,
returns rows: ``cw_requires_rows``).
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from route_graph import prompts
from route_graph.graph.calls import Meter
from route_graph.graph.context import RouteConfig
from route_graph.graph.pipeline import Node, Pipeline
from route_graph.graph.stages import CONTINUE_WRITE
from route_graph.graph.state import RouteState, TraceEntry
from route_graph.views import parsing, stage_prefill

__all__ = ["continue_write"]


def continue_write(pipe: Pipeline) -> Node:
    """The ``continue_write`` node of ``pipe``."""

    def node(state: RouteState, runtime: Runtime[RouteConfig], config: RunnableConfig) -> dict[str, Any]:
        """MCP step 4: complete a truncated SQL; keep it if it executes (and returns rows)."""
        cfg = pipe.settings(runtime)
        meter = Meter()
        current_ok = bool(state.get("result", {}).get("ok"))
        links = state.get("links") if cfg.schema_linking and not cfg.cw_full_schema else None
        msgs = pipe.messages("cw", state, cfg, links=links)
        prefill = stage_prefill("cw", cfg.view())
        answer = parsing.parse_sql(pipe.model.ask(meter, msgs, prefill, cfg, config, name="continue_write"))
        sql = prompts.join_continuation(cfg.continuation_prefix, answer) if answer else None
        result = pipe.execute(sql, cfg)
        needs_rows = cfg.cw_requires_rows and current_ok
        accepted = result.ok and (result.row_count > 0 or not needs_rows)
        entry: TraceEntry = {
            "stage": CONTINUE_WRITE.node,
            "reason": "hard" if current_ok else "not_executable",
            "schema": "reduced" if links else "full",
            "proposed_sql": sql,
            "accepted": accepted,
            **pipe.outcome(result),
            **meter.cost(),
        }
        update: dict[str, Any] = {}
        if accepted:
            update = {"sql": sql, "result": result.to_dict(), "stage": CONTINUE_WRITE.node}
        final_sql = update.get("sql", state.get("sql") or "")
        return {**update, "sql_by_stage": {CONTINUE_WRITE.sql_key: final_sql}, "trace": [entry]}

    return node
