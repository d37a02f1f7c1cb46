"""MCP step 1, schema linking: the tables and columns the question needs, so generation sees less.

Two calls at once on the full schema: the links the model names (JSON, constrained where the
backend can) and a draft SQL, whose tables and columns are links too; the union, checked against
the schema, is what generation sees. The draft is also the single-pass answer: a candidate of the
finalize vote (``sql_by_stage["draft"]``). An unreadable links answer is no failure: the draft's
links are used alone and the trace says why.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import asdict
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import get_executor_for_config
from langgraph.runtime import Runtime

from route_graph.errors import RouteGraphError
from route_graph.graph.calls import Meter
from route_graph.graph.context import RouteConfig
from route_graph.graph.pipeline import Node, Pipeline
from route_graph.graph.stages import SCHEMA_LINK
from route_graph.graph.state import RouteState, TraceEntry
from route_graph.linking import links_from_sql, merge_links, validate_links
from route_graph.rendering import recall_first_links
from route_graph.views import full_schema_text, parsing, stage_prefill

__all__ = ["schema_link"]


def schema_link(pipe: Pipeline) -> Node:
    """The ``schema_link`` node of ``pipe``."""
    db = pipe.db

    def node(state: RouteState, runtime: Runtime[RouteConfig], config: RunnableConfig) -> dict[str, Any]:
        """MCP step 1: links from the SL answer and from a full-schema draft SQL, merged."""
        cfg = pipe.settings(runtime)
        meter = Meter()
        view = cfg.view()
        schema_text = full_schema_text(db, view)
        sl_msgs = pipe.messages("sl", state, cfg, full_text=schema_text)
        ts_msgs = pipe.messages("draft", state, cfg, full_text=schema_text)
        # Constrained (JSON-schema) decoding replaces the prefill where the backend has it.
        sl_llm = pipe.model.linker
        with get_executor_for_config(config) as pool:  # both calls at once: batched by local models
            sl_future: Future = pool.submit(
                pipe.model.ask, meter, sl_msgs, stage_prefill("sl", view), cfg, config, sl_llm, name="schema_link.links"
            )
            ts_future: Future = pool.submit(
                pipe.model.ask, meter, ts_msgs, stage_prefill("draft", view), cfg, config, name="schema_link.draft"
            )
            ts_text = ts_future.result()
            try:
                sl_text = sl_future.result()
            except RouteGraphError:
                raise  # the backend itself failed (ModelError): the user's to fix
            except Exception as exc:  # noqa: BLE001 - an unreadable SL answer must not end the run
                # e.g. JSON-schema decoding cut at the length limit (openai.LengthFinishReasonError):
                # link from the draft SQL alone, and say so in the trace.
                sl_text, added_error = "", {"links_error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            else:
                added_error = {}
        model_links, dropped = validate_links(parsing.parse_links(sl_text), db.schema)
        draft_sql = parsing.parse_sql(ts_text)
        draft_links = links_from_sql(draft_sql, db.schema, db.dialect) if draft_sql else None
        links = merge_links(db.schema, model_links, draft_links)
        added: dict[str, Any] = {}
        if view.recall_first_linking:
            text = f"{state['question']} {state.get('hint') or ''}"
            links, additions = recall_first_links(db, view, links, text, schema_text)
            if additions is not None:
                added = {"recall_added": asdict(additions)}
        draft = pipe.execute(draft_sql, cfg)
        entry: TraceEntry = {
            "stage": SCHEMA_LINK.node,
            "model_links": model_links,
            "hallucinated": dropped,
            "sql_links": draft_links or {},
            **added_error,
            **added,
            "links": links,
            "fallback_full_schema": not links,
            "proposed_sql": draft_sql,
            **pipe.outcome(draft),
            **meter.cost(),
        }
        return {
            "links": links,
            "draft_sql": draft_sql,
            "draft_result": draft.to_dict(),
            "sql_by_stage": {SCHEMA_LINK.sql_key: draft_sql or ""},
            "trace": [entry],
        }

    return node
