"""Wiring of the MCP ``StateGraph``: question intake, the stages with their execution- and
difficulty-driven edges (``routes``), optional human review, the chat reply, the extras asked for;
compile.

An extra (``extras``: ``self_consistency``, ``value_retrieval``) adds its nodes and their edges in
its ``install`` and enters through a ``Routes`` hook; its state keys join ``RouteState``
(``state.state_schema``). Without extras the graph is the paper's pipeline and nothing else.
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
from route_graph.graph.extras import Extra, resolve_extras
from route_graph.graph.finalize import finalize
from route_graph.graph.generate import generate
from route_graph.graph.noise_correct import noise_correct
from route_graph.graph.pipeline import Node, Pipeline
from route_graph.graph.rescue import rescue
from route_graph.graph.routes import Routes
from route_graph.graph.schema_link import schema_link
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
    SCHEMA_LINK,
    Stage,
)
from route_graph.graph.state import RouteInput, RouteOutput, state_schema
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
    extras: Iterable[Extra | str] | str = (),
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

    ``extras`` builds in options that are off by default, with their nodes and state: names
    (``"self_consistency"``, ``"value_retrieval"``: their defaults) or objects with settings
    (``SelfConsistency(samples=8)``), see ``route_graph.graph.extras``.

    ``schema``, ``include_tables`` and ``ignore_tables`` are ``open_database``'s: read one
    PostgreSQL/DuckDB schema, show the model only some tables/views (docs/databases.md).
    """
    chosen = resolve_extras(extras)
    database = open_database(db, schema=schema, include_tables=include_tables, ignore_tables=ignore_tables)
    pipe = Pipeline(llm, database, config or RouteConfig(), chosen)
    routes = Routes(pipe)
    state = state_schema(chosen)
    graph = StateGraph(state, context_schema=RouteConfig, input_schema=RouteInput, output_schema=RouteOutput)

    def add(stage: Stage, node: Node) -> None:
        # Every node reads the whole state, the extras' keys included (LangGraph would read only the
        # keys of the class its first parameter is annotated with: RouteState's).
        graph.add_node(stage.node, node, input_schema=state)

    add(NEW_QUESTION, new_question(pipe))
    add(REWRITE_QUESTION, rewrite_question(pipe))
    add(SCHEMA_LINK, schema_link(pipe))
    add(GENERATE, generate(pipe))
    add(NOISE_CORRECT, noise_correct(pipe))
    add(CONTINUE_WRITE, continue_write(pipe))
    add(RESCUE, rescue(pipe))
    add(FINALIZE, finalize(pipe))
    add(REVIEW, review(pipe))
    add(RESPOND, respond(pipe))
    for extra in chosen:  # its nodes and their edges; it may set routes.entry or routes.fan_out
        extra.install(graph, pipe, routes)
    graph.add_edge(START, NEW_QUESTION.node)
    graph.add_conditional_edges(NEW_QUESTION.node, routes.route_question, [REWRITE_QUESTION.node, *routes.start_targets()])
    graph.add_conditional_edges(REWRITE_QUESTION.node, routes.route_start, routes.start_targets())
    graph.add_edge(SCHEMA_LINK.node, GENERATE.node)
    graph.add_conditional_edges(GENERATE.node, routes.route_generate, routes.generate_targets())
    graph.add_conditional_edges(NOISE_CORRECT.node, routes.route_after_correction)
    graph.add_conditional_edges(CONTINUE_WRITE.node, routes.route_after_continuation)
    graph.add_edge(RESCUE.node, FINALIZE.node)
    graph.add_conditional_edges(FINALIZE.node, routes.route_after_finalize)
    graph.add_edge(REVIEW.node, RESPOND.node)
    graph.add_edge(RESPOND.node, END)
    return chat.question_tool_schema(graph.compile(checkpointer=checkpointer, name=name))
