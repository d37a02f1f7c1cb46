"""Wiring of the MCP ``StateGraph``: question intake, the stages with their execution- and
difficulty-driven edges, optional human review, the chat reply; compile.

Self-consistency is LangGraph's map-reduce: ``generate``'s router returns one ``Send`` per sample
(``sample_generate`` runs K times in one step), and the edge from ``sample_generate`` to
``self_consistency`` makes that join run once, after all of them; it then routes on as
``generate`` would have. With ``self_consistency=0`` the router returns generate's usual next node.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from route_graph import chat
from route_graph.context import RouteConfig
from route_graph.nodes import RouteNodes
from route_graph.sql.database import Database
from route_graph.sql.opening import open_database
from route_graph.state import RouteInput, RouteOutput, RouteState

if TYPE_CHECKING:
    import sqlalchemy

__all__ = ["GRAPH_NAME", "build_route_graph"]

GRAPH_NAME = "route"


def build_route_graph(
    llm: BaseChatModel,
    db: Database | str | os.PathLike[str] | sqlalchemy.Engine | Any,
    config: RouteConfig | None = None,
    *,
    checkpointer: Any = None,
    name: str = GRAPH_NAME,
    schema: str | None = None,
    include_tables: Iterable[str] | None = None,
    ignore_tables: Iterable[str] | None = None,
) -> CompiledStateGraph:
    """Compile ROUTE's multitask collaboration pipeline for one chat model and one database.

    ``db`` may be a SQLite path, a SQLAlchemy URL or Engine, a langchain-community ``SQLDatabase``
    or a ``Database``. ``config`` is the default ``RouteConfig``; a run's ``context`` (a dict, or a
    ``RouteConfig``) overrides only the fields it names. Invoke with ``{"question": ..., "hint": ...}``
    or ``{"messages": [...]}``; the output holds ``sql``, ``result`` (``ExecutionResult.to_dict()``),
    ``stage``, ``trace`` (this question's) and ``messages`` (the reply appended). With a
    ``checkpointer``, one thread answers many questions (follow-ups rewritten from the history) and
    ``review_before_execution`` can pause for a human (``Command(resume=...)``).

    ``schema``, ``include_tables`` and ``ignore_tables`` are ``open_database``'s: read one
    PostgreSQL/DuckDB schema, show the model only some tables/views (docs/databases.md).
    """
    database = open_database(db, schema=schema, include_tables=include_tables, ignore_tables=ignore_tables)
    nodes = RouteNodes(llm, database, config or RouteConfig())
    graph = StateGraph(RouteState, context_schema=RouteConfig, input_schema=RouteInput, output_schema=RouteOutput)
    graph.add_node("new_question", nodes.new_question)
    graph.add_node("rewrite_question", nodes.rewrite_question)
    graph.add_node("schema_link", nodes.schema_link)
    graph.add_node("generate", nodes.generate)
    # Its input is the Send payload (SampleTask); input_schema keeps SampleTask's keys out of the state.
    graph.add_node("sample_generate", nodes.sample_generate, input_schema=RouteState)
    graph.add_node("self_consistency", nodes.self_consistency)
    graph.add_node("noise_correct", nodes.noise_correct)
    graph.add_node("continue_write", nodes.continue_write)
    graph.add_node("rescue", nodes.rescue)
    graph.add_node("finalize", nodes.finalize)
    graph.add_node("review", nodes.review)
    graph.add_node("respond", nodes.respond)
    graph.add_edge(START, "new_question")
    graph.add_conditional_edges("new_question", nodes.route_question)
    graph.add_conditional_edges("rewrite_question", nodes.route_start)
    graph.add_edge("schema_link", "generate")
    after_generate = ["noise_correct", "continue_write", "rescue", "finalize"]
    graph.add_conditional_edges("generate", nodes.route_generate, ["sample_generate", *after_generate])
    graph.add_edge("sample_generate", "self_consistency")
    graph.add_conditional_edges("self_consistency", nodes.route_after_generate, after_generate)
    graph.add_conditional_edges("noise_correct", nodes.route_after_correction)
    graph.add_conditional_edges("continue_write", nodes.route_after_continuation)
    graph.add_edge("rescue", "finalize")
    graph.add_conditional_edges("finalize", nodes.route_after_finalize)
    graph.add_edge("review", "respond")
    graph.add_edge("respond", END)
    return chat.question_tool_schema(graph.compile(checkpointer=checkpointer, name=name))
