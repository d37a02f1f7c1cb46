"""route-graph: ROUTE's multitask text-to-SQL (MCP + MSFT) for LangChain and LangGraph.

``build_route_graph(llm, db)`` compiles the multitask collaboration pipeline for any LangChain chat
model and any SQL database; ``load_chat_model()`` gives the offline default model.

Layering (enforced on imports by tests/test_layering.py): faces (``cli``, ``studio``) -> the graph
(the ``graph`` package: a module per stage, its state, context and wiring) -> what the model sees
(``views``, ``prompts``, ``rendering``, ``linking``, ``values``, ``results``, ``repair``) -> ``sql``
(databases, the guard, execution); ``models`` (and its engines) and ``finetune`` sit beside the
graph, which never imports them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from route_graph.errors import (
    ConfigError,
    DatabaseError,
    DataError,
    InputError,
    ModelError,
    RouteGraphError,
)

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from route_graph.graph.build import build_route_graph
    from route_graph.graph.chat import as_sql_tool
    from route_graph.graph.context import RouteConfig
    from route_graph.sql.database import Database
    from route_graph.sql.execute import execute_sql
    from route_graph.sql.opening import open_database
    from route_graph.sql.result import ExecutionResult

# Public names imported on first use, so that importing one module (say ``route_graph.sql.execute``)
# loads only what that module needs, not the whole graph.
_LAZY = {
    "as_sql_tool": "route_graph.graph.chat",
    "RouteConfig": "route_graph.graph.context",
    "Database": "route_graph.sql.database",
    "open_database": "route_graph.sql.opening",
    "ExecutionResult": "route_graph.sql.result",
    "execute_sql": "route_graph.sql.execute",
    "build_route_graph": "route_graph.graph.build",
}

__all__ = [
    "ConfigError",
    "DataError",
    "Database",
    "DatabaseError",
    "ExecutionResult",
    "InputError",
    "ModelError",
    "RouteConfig",
    "RouteGraphError",
    "as_sql_tool",
    "build_route_graph",
    "execute_sql",
    "load_chat_model",
    "open_database",
]

__version__ = "0.1.0"


def load_chat_model(spec: str | None = None, **kwargs: Any) -> BaseChatModel:
    """Chat model from a spec (offline default, HF directory, ``openai:URL#NAME``); see ``route_graph.models``."""
    from route_graph.models import load_chat_model as _load

    return _load(spec, **kwargs)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'route_graph' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
