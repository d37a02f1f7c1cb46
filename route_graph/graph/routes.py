"""Every conditional edge of the graph on one page: where a question goes after each stage.

The edges are decided by execution and difficulty, not by the model: noise correction when it
is on; continuation writing when the SQL still fails or is hard (h(s, d) > ``difficulty_threshold``,
tables touched); rescue when no candidate executes; human review when asked for. Each router's
``Literal`` return type lists the nodes it can go to (LangGraph draws the graph from it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Send

from route_graph.graph.context import RouteConfig
from route_graph.graph.pipeline import Pipeline
from route_graph.graph.rescue import nothing_executes
from route_graph.graph.stages import SAMPLE_GENERATE
from route_graph.graph.state import RouteState
from route_graph.linking import is_hard

__all__ = ["Routes"]


class Routes:
    """The routers of one graph, reading its settings and its database through ``pipe``."""

    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe

    def route_question(
        self, state: RouteState, runtime: Runtime[RouteConfig]
    ) -> Literal["rewrite_question", "schema_link", "generate"]:
        """A chat follow-up is rewritten first; any other question goes to the first MCP stage."""
        if state.get("follow_up") and self.pipe.settings(runtime).history_messages > 0:
            return "rewrite_question"
        return self.route_start(state, runtime)

    def route_start(self, state: RouteState, runtime: Runtime[RouteConfig]) -> Literal["schema_link", "generate"]:
        """Schema linking first, unless it is switched off."""
        return "schema_link" if self.pipe.settings(runtime).schema_linking else "generate"

    def route_generate(
        self, state: RouteState, runtime: Runtime[RouteConfig]
    ) -> list[Send] | Literal["noise_correct", "continue_write", "finalize"]:
        """After generate: K self-consistency samples first when they are on (and can be voted on),
        else straight on as ``route_after_generate`` says (the ``self_consistency`` join asks it later)."""
        cfg = self.pipe.settings(runtime)
        if cfg.self_consistency > 0 and cfg.vote:
            task = {
                "question": state["question"],
                "hint": state.get("hint"),
                "links": state.get("links"),
                "value_matches": state.get("value_matches"),
            }
            return [Send(SAMPLE_GENERATE.node, {**task, "index": i}) for i in range(1, cfg.self_consistency + 1)]
        return self.route_after_generate(state, runtime)

    def route_after_generate(
        self, state: RouteState, runtime: Runtime[RouteConfig]
    ) -> Literal["noise_correct", "continue_write", "rescue", "finalize"]:
        """Noise correction if on; else continuation writing for failing or hard SQL."""
        cfg = self.pipe.settings(runtime)
        if cfg.noise_correction:
            return "noise_correct"
        return "continue_write" if self._needs_continuation(state, cfg) else self._finish(state, cfg)

    def route_after_correction(
        self, state: RouteState, runtime: Runtime[RouteConfig]
    ) -> Literal["continue_write", "rescue", "finalize"]:
        """Continuation writing when the SQL still fails to execute or is hard (h(s, d) > threshold)."""
        cfg = self.pipe.settings(runtime)
        return "continue_write" if self._needs_continuation(state, cfg) else self._finish(state, cfg)

    def route_after_continuation(self, state: RouteState, runtime: Runtime[RouteConfig]) -> Literal["rescue", "finalize"]:
        """The rescue stage when nothing executes yet, else finalize."""
        return self._finish(state, self.pipe.settings(runtime))

    def route_after_finalize(self, state: RouteState, runtime: Runtime[RouteConfig]) -> Literal["review", "respond"]:
        """Human review of the final SQL when ``review_before_execution`` is on."""
        return "review" if self.pipe.settings(runtime).review_before_execution else "respond"

    def _needs_continuation(self, state: RouteState, cfg: RouteConfig) -> bool:
        if not cfg.continuation_writing:
            return False
        if not (state.get("result") or {}).get("ok"):
            return True
        db = self.pipe.db
        return is_hard(state.get("sql") or "", db.schema, cfg.difficulty_threshold, db.dialect)

    def _finish(self, state: Mapping[str, Any], cfg: RouteConfig) -> Literal["rescue", "finalize"]:
        return "rescue" if cfg.rescue and nothing_executes(state) else "finalize"
