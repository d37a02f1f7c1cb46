"""Value retrieval (the ``value_retrieval`` extra): the database's text values the question names.

The phrases of the question and hint are matched against an index of the database's text values
(built once per database and cached, ``route_graph.values``); the matches are kept in the state
(``value_matches``), and every SQL-writing prompt of this question shows them after the schema as
``table.column: 'value'`` (``Pipeline.messages``). The node runs once per question, before the
first MCP stage; a graph built without the extra has neither the node nor the key.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from langgraph.runtime import Runtime

from route_graph.graph.context import RouteConfig
from route_graph.graph.pipeline import Node, Pipeline
from route_graph.graph.stages import GENERATE, RETRIEVE_VALUES, SCHEMA_LINK
from route_graph.graph.state import RouteState, TraceEntry
from route_graph.values import match_values

if TYPE_CHECKING:
    from langgraph.graph import StateGraph

    from route_graph.graph.extras import ValueRetrieval
    from route_graph.graph.routes import Routes

__all__ = ["install", "retrieve_values"]


def retrieve_values(pipe: Pipeline, extra: ValueRetrieval) -> Node:
    """The ``retrieve_values`` node of ``pipe``."""

    def node(state: RouteState, runtime: Runtime[RouteConfig]) -> dict[str, Any]:
        """This question's value matches, and a trace entry with them and the time they took.
        Never raises: a failing index build gives no matches and a ``value_error``."""
        start = time.perf_counter()
        entry: TraceEntry = {"stage": RETRIEVE_VALUES.node}
        try:
            found = match_values(pipe.db, state["question"], state.get("hint"), limit=extra.limit, threshold=extra.threshold)
            matches = [m.to_dict() for m in found]
        except Exception as exc:  # noqa: BLE001 - value retrieval is an aid; the question goes on without it
            matches = []
            entry["value_error"] = f"{type(exc).__name__}: {exc}"
        entry["value_matches"] = matches
        entry["value_seconds"] = round(time.perf_counter() - start, 3)
        return {"value_matches": matches, "trace": [entry]}

    return node


def install(graph: StateGraph, pipe: Pipeline, routes: Routes, extra: ValueRetrieval) -> None:
    """The node, entered where the first MCP stage was (``Routes.entry``), and on to that stage."""
    graph.add_node(RETRIEVE_VALUES.node, retrieve_values(pipe, extra), input_schema=graph.state_schema)
    graph.add_conditional_edges(RETRIEVE_VALUES.node, routes.route_mcp, [SCHEMA_LINK.node, GENERATE.node])
    routes.entry = RETRIEVE_VALUES.node
