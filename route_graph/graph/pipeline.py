"""What every node of one compiled graph shares: the chat model, the database, the build-time config.

Each stage module turns a ``Pipeline`` into its node (``schema_link(pipe)`` and so on), and each node
does the same few things through it: settle this run's settings (``settings``), build a stage's
messages (``messages``, the views' ``stage_messages`` for this question), ask the model
(``pipe.model.ask``), execute SQL through the guarded executor (``execute``) and record the outcome
(``outcome``) in its trace entry. Model output never raises in a node: unparseable answers and
failing SQL become trace entries and execution feedback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langgraph.runtime import Runtime

from route_graph import prompts
from route_graph.graph.calls import ModelCalls
from route_graph.graph.context import RouteConfig
from route_graph.linking import links_json_schema
from route_graph.sql.database import Database
from route_graph.sql.execute import execute_sql
from route_graph.sql.result import ExecutionResult
from route_graph.values import render_matches
from route_graph.views import NO_SQL_ERROR, Stage, no_sql_result, stage_messages

if TYPE_CHECKING:
    from route_graph.graph.extras import Extra

__all__ = ["NO_SQL_ERROR", "Node", "Pipeline"]

#: A node function, as ``StateGraph.add_node`` takes it: (state, runtime[, config]) -> update.
Node = Callable[..., dict[str, Any]]


class Pipeline:
    """One chat model, one database, the default settings and the extras built in, shared by the
    nodes of one graph."""

    def __init__(self, llm: BaseChatModel, db: Database, config: RouteConfig, extras: Iterable[Extra] = ()) -> None:
        self.db = db
        self.default = config
        self.extras: tuple[Extra, ...] = tuple(extras)
        self.model = ModelCalls(llm, links_json_schema(db.schema))

    def settings(self, runtime: Runtime[RouteConfig] | None) -> RouteConfig:
        """The build-time config with the fields this run's context names (see ``RouteConfig.override``)."""
        return self.default.override(runtime.context if runtime is not None else None)

    def execute(self, sql: str | None, cfg: RouteConfig) -> ExecutionResult:
        """``sql`` through the guarded executor; no SQL is a failed result (``NO_SQL_ERROR``)."""
        if not sql:
            return no_sql_result()
        return execute_sql(self.db, sql, timeout_s=cfg.execution_timeout_s, max_rows=cfg.max_rows)

    def messages(
        self,
        stage: Stage,
        state: Mapping[str, Any],
        cfg: RouteConfig,
        **view: Any,
    ) -> list[prompts.Message]:
        """``views.stage_messages`` for this question (the state, or a self-consistency sample's
        task): its hint, and the values ``retrieve_values`` matched (the value_retrieval extra)."""
        matches = state.get("value_matches")
        values = render_matches(matches) if matches else None
        return stage_messages(stage, state["question"], self.db, cfg.view(), hint=state.get("hint"), values=values, **view)

    @staticmethod
    def outcome(result: ExecutionResult) -> dict[str, Any]:
        """The trace fields of an executed SQL: ``executed``, ``rows``, ``error``."""
        return {"executed": result.ok, "rows": result.row_count if result.ok else None, "error": result.error}
