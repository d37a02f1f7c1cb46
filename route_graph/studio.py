"""LangGraph Studio / ``langgraph dev`` entry: a graph factory that takes only ``config``.

The database and model come from the run's ``configurable`` (``db``, ``model``) or the environment
(``ROUTE_GRAPH_DB``, ``ROUTE_GRAPH_MODEL``); the defaults are the demo database and the offline
default model. Stage switches and thresholds are the graph's context (``RouteConfig``) fields.
"""

from __future__ import annotations

import asyncio
import os
from functools import lru_cache

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from route_graph.demo import demo_database_path
from route_graph.graph import build_route_graph

__all__ = ["make_graph"]


@lru_cache(maxsize=4)
def _graph_for(db: str, model: str) -> CompiledStateGraph:
    from route_graph.models import load_chat_model

    return build_route_graph(load_chat_model(model or None), db)


def _graph_from(configurable: dict) -> CompiledStateGraph:
    db = configurable.get("db") or os.environ.get("ROUTE_GRAPH_DB") or str(demo_database_path())
    model = configurable.get("model") or os.environ.get("ROUTE_GRAPH_MODEL") or ""
    return _graph_for(str(db), str(model))


async def make_graph(config: RunnableConfig | None = None) -> CompiledStateGraph:
    """Build (once per database/model pair) the graph Studio serves.

    ``langgraph dev`` calls this on its event loop and rejects blocking I/O there, so the model
    and database are opened in a worker thread.
    """
    configurable = dict((config or {}).get("configurable", {}) or {})
    return await asyncio.to_thread(_graph_from, configurable)
