"""The MCP pipeline as a LangGraph graph: one module per stage, wired in ``build``.

- ``build``: ``build_route_graph``, every node and edge on one screen.
- ``stages``: ``STAGES``, each node named once (node id, ``--stages`` alias, switch, ``sql_by_stage`` key).
- ``routes``: every conditional edge on one page.
- ``state`` (input, state, output, the typed ``TraceEntry``), ``context`` (``RouteConfig``: the
  per-run switches and limits), ``chat`` (conversation helpers).
- ``extras``: options off by default that are built in only when asked for, with their nodes and
  state (``build_route_graph(..., extras=["self_consistency", "value_retrieval"])``).
- ``pipeline`` (what every node shares: model, database, settings) and ``calls`` (how a node asks
  the model).
- The nodes: ``schema_link``, ``generate``, ``noise_correct``, ``continue_write``, ``rescue``,
  ``finalize``; around them ``conversation`` (``new_question``, ``rewrite_question``, ``review``,
  ``respond``); the extras' ``retrieve_values`` and ``self_consistency`` (with ``sample_generate``).

The graph shows the model what ``route_graph.views`` composes and runs SQL through
``route_graph.sql``; it never imports ``route_graph.models`` or ``finetune`` (tests/test_layering.py).

Adding a stage, say ``explain`` after finalize:

1. ``graph/explain.py``: ``def explain(pipe: Pipeline) -> Node`` returning the node function
   ``(state, runtime[, config]) -> update``; it settles its settings with ``pipe.settings(runtime)``,
   asks through ``pipe.model.ask(meter, messages, prefill, cfg, config, name="explain")`` (add the
   call name to ``calls.MODEL_CALL_NAMES``), runs SQL with ``pipe.execute`` and returns
   ``{"trace": [entry]}`` with a ``TraceEntry`` whose ``stage`` is ``EXPLAIN.node``.
2. ``stages.py``: one row, ``EXPLAIN = Stage("explain", alias=..., switch=..., label=...)``, added to
   ``STAGES`` in pipeline order (a ``switch`` is a ``RouteConfig`` field; ``--stages`` then knows it).
3. ``build.py``: ``graph.add_node(EXPLAIN.node, explain(pipe))`` and its edge (or a router's new
   ``Literal`` value in ``routes.py``).

Importing this package loads nothing heavy (the CLI reads ``context`` and ``stages`` first);
``build_route_graph`` is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from route_graph.graph.build import GRAPH_NAME, build_route_graph

__all__ = ["GRAPH_NAME", "build_route_graph"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'route_graph.graph' has no attribute {name!r}")
    value = getattr(importlib.import_module("route_graph.graph.build"), name)
    globals()[name] = value  # later lookups skip this function
    return value
