"""LangGraph Studio / ``langgraph dev`` entry: a graph factory that takes only ``config``.

The database and model come from the run's ``configurable`` (``db``, ``model``, and ``schema`` /
``include_tables`` for the database) or the environment (``ROUTE_GRAPH_DB``, ``ROUTE_GRAPH_MODEL``,
``ROUTE_GRAPH_SCHEMA``, ``ROUTE_GRAPH_INCLUDE_TABLES`` as ``a,b``); the defaults are the demo database and the offline
default model. The extras to build in (``route_graph.graph.extras``) come the same way: ``extras`` or
``ROUTE_GRAPH_EXTRAS``, names as ``a,b`` (``self_consistency,value_retrieval``) with their defaults.
Stage switches and thresholds are the graph's context (``RouteConfig``) fields.
"""

from __future__ import annotations

import asyncio
import os
from functools import lru_cache

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from route_graph.demo import demo_database_path
from route_graph.graph import build_route_graph
from route_graph.graph.extras import resolve_extras

__all__ = ["make_graph"]


@lru_cache(maxsize=4)
def _graph_for(db: str, model: str, schema: str, tables: tuple[str, ...], extras: tuple[str, ...] = ()) -> CompiledStateGraph:
    from route_graph.models import load_chat_model

    return build_route_graph(
        load_chat_model(model or None), db, schema=schema or None, include_tables=list(tables) or None, extras=extras
    )


def _names(value: object) -> tuple[str, ...]:
    """``"a, b"`` or ``["a", "b"]`` -> ``("a", "b")``."""
    parts = value.split(",") if isinstance(value, str) else list(value or ())  # type: ignore[call-overload]
    return tuple(str(p).strip() for p in parts if str(p).strip())


def _graph_from(configurable: dict) -> CompiledStateGraph:
    db = configurable.get("db") or os.environ.get("ROUTE_GRAPH_DB") or str(demo_database_path())
    model = configurable.get("model") or os.environ.get("ROUTE_GRAPH_MODEL") or ""
    schema = configurable.get("schema") or os.environ.get("ROUTE_GRAPH_SCHEMA") or ""
    tables = _names(configurable.get("include_tables") or os.environ.get("ROUTE_GRAPH_INCLUDE_TABLES") or ())
    extras = _names(configurable.get("extras") or os.environ.get("ROUTE_GRAPH_EXTRAS") or ())
    resolve_extras(extras)  # an unknown name fails here, before the model loads
    return _graph_for(str(db), str(model), str(schema), tables, extras)


async def make_graph(config: RunnableConfig | None = None) -> CompiledStateGraph:
    """Build (once per database/model pair) the graph Studio serves.

    ``langgraph dev`` calls this on its event loop and rejects blocking I/O there, so the model
    and database are opened in a worker thread.
    """
    configurable = dict((config or {}).get("configurable", {}) or {})
    return await asyncio.to_thread(_graph_from, configurable)
