"""Wiring of the MCP ``StateGraph``: question intake, the stages with their execution- and
difficulty-driven edges (``routes``), optional human review, the chat reply; compile.

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

from route_graph.graph import chat
from route_graph.graph.context import RouteConfig
from route_graph.graph.continue_write import continue_write
from route_graph.graph.conversation import (
    new_question,
    respond,
    review,
    rewrite_question,
)
from route_graph.graph.finalize import finalize
from route_graph.graph.generate import generate
from route_graph.graph.noise_correct import noise_correct
from route_graph.graph.pipeline import Pipeline
from route_graph.graph.rescue import rescue
from route_graph.graph.routes import Routes
from route_graph.graph.schema_link import schema_link
from route_graph.graph.self_consistency import sample_generate, self_consistency
from route_graph.graph.stages import (
    CONTINUE_WRITE,
    FINALIZE,
    GENERATE,
    NEW_QUESTION,
    NOISE_CORRECT,
    RESCUE,
    RESPOND,
    REVIEW,
    REWRITE_QUESTION,
    SAMPLE_GENERATE,
    SCHEMA_LINK,
    SELF_CONSISTENCY,
)
from route_graph.graph.state import RouteInput, RouteOutput, RouteState
from route_graph.sql.database import Database
from route_graph.sql.opening import open_database

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
    pipe = Pipeline(llm, database, config or RouteConfig())
    routes = Routes(pipe)
    graph = StateGraph(RouteState, context_schema=RouteConfig, input_schema=RouteInput, output_schema=RouteOutput)
    graph.add_node(NEW_QUESTION.node, new_question(pipe))
    graph.add_node(REWRITE_QUESTION.node, rewrite_question(pipe))
    graph.add_node(SCHEMA_LINK.node, schema_link(pipe))
    graph.add_node(GENERATE.node, generate(pipe))
    # Its input is the Send payload (SampleTask); input_schema keeps SampleTask's keys out of the state.
    graph.add_node(SAMPLE_GENERATE.node, sample_generate(pipe), input_schema=RouteState)
    graph.add_node(SELF_CONSISTENCY.node, self_consistency(pipe))
    graph.add_node(NOISE_CORRECT.node, noise_correct(pipe))
    graph.add_node(CONTINUE_WRITE.node, continue_write(pipe))
    graph.add_node(RESCUE.node, rescue(pipe))
    graph.add_node(FINALIZE.node, finalize(pipe))
    graph.add_node(REVIEW.node, review(pipe))
    graph.add_node(RESPOND.node, respond(pipe))
    graph.add_edge(START, NEW_QUESTION.node)
    graph.add_conditional_edges(NEW_QUESTION.node, routes.route_question)
    graph.add_conditional_edges(REWRITE_QUESTION.node, routes.route_start)
    graph.add_edge(SCHEMA_LINK.node, GENERATE.node)
    after_generate = [NOISE_CORRECT.node, CONTINUE_WRITE.node, RESCUE.node, FINALIZE.node]
    graph.add_conditional_edges(GENERATE.node, routes.route_generate, [SAMPLE_GENERATE.node, *after_generate])
    graph.add_edge(SAMPLE_GENERATE.node, SELF_CONSISTENCY.node)
    graph.add_conditional_edges(SELF_CONSISTENCY.node, routes.route_after_generate, after_generate)
    graph.add_conditional_edges(NOISE_CORRECT.node, routes.route_after_correction)
    graph.add_conditional_edges(CONTINUE_WRITE.node, routes.route_after_continuation)
    graph.add_edge(RESCUE.node, FINALIZE.node)
    graph.add_conditional_edges(FINALIZE.node, routes.route_after_finalize)
    graph.add_edge(REVIEW.node, RESPOND.node)
    graph.add_edge(RESPOND.node, END)
    return chat.question_tool_schema(graph.compile(checkpointer=checkpointer, name=name))
