"""Every conditional edge of the graph on one page: where a question goes after each stage.

The edges are decided by execution and difficulty, not by the model: noise correction when it
is on; continuation writing when the SQL still fails or is hard (h(s, d) > ``difficulty_threshold``,
tables touched); rescue when no candidate executes; human review when asked for. Each router's
``Literal`` return type lists the nodes it can go to; ``build`` gives LangGraph the ones the graph
has (``start_targets``, ``generate_targets``), since an extra adds some.

An extra enters the pipeline through one of two hooks its ``install`` sets: ``entry``, a node run
before the first MCP stage (value retrieval), and ``fan_out``, ``Send``s after generate
(self-consistency). Without extras both are unset and the routers are the paper's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import Send

from route_graph.graph.context import RouteConfig
from route_graph.graph.pipeline import Pipeline
from route_graph.graph.rescue import nothing_executes
from route_graph.graph.stages import (
    CONTINUE_WRITE,
    FINALIZE,
    GENERATE,
    NOISE_CORRECT,
    RESCUE,
    SAMPLE_GENERATE,
    SCHEMA_LINK,
)
from route_graph.linking import is_hard

__all__ = ["Routes"]

#: A router's view of the state: all of it. (LangGraph hands a router only the keys of the class its
#: first parameter is annotated with, and an extra's keys are not ``RouteState``'s.)
State = Mapping[str, Any]


class Routes:
    """The routers of one graph, reading its settings and its database through ``pipe``."""

    #: Where a question can go after generate (and after the self-consistency join).
    after_generate_targets = (NOISE_CORRECT.node, CONTINUE_WRITE.node, RESCUE.node, FINALIZE.node)

    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe
        #: A node an extra runs before the first MCP stage (``retrieve_values``); None: none.
        self.entry: Literal["retrieve_values"] | None = None
        #: An extra's ``Send``s after generate (self-consistency samples); None, or [], for none.
        self.fan_out: Callable[[State, RouteConfig], list[Send]] | None = None

    def start_targets(self) -> list[str]:
        """Where a question can go before the MCP stages: the ``entry`` node, or the first stage."""
        return [self.entry] if self.entry else [SCHEMA_LINK.node, GENERATE.node]

    def generate_targets(self) -> list[str]:
        """Where a question can go after generate: the ``fan_out`` node, then as ``route_after_generate``."""
        return [*([SAMPLE_GENERATE.node] if self.fan_out else []), *self.after_generate_targets]

    def route_question(
        self, state: State, runtime: Runtime[RouteConfig]
    ) -> Literal["rewrite_question", "retrieve_values", "schema_link", "generate"]:
        """A chat follow-up is rewritten first; any other question goes on as ``route_start`` says."""
        if state.get("follow_up") and self.pipe.settings(runtime).history_messages > 0:
            return "rewrite_question"
        return self.route_start(state, runtime)

    def route_start(
        self, state: State, runtime: Runtime[RouteConfig]
    ) -> Literal["retrieve_values", "schema_link", "generate"]:
        """An extra's ``entry`` node first (value retrieval), else the first MCP stage."""
        return self.entry or self.route_mcp(state, runtime)

    def route_mcp(self, state: State, runtime: Runtime[RouteConfig]) -> Literal["schema_link", "generate"]:
        """Schema linking first, unless it is switched off."""
        return "schema_link" if self.pipe.settings(runtime).schema_linking else "generate"

    def route_generate(
        self, state: State, runtime: Runtime[RouteConfig]
    ) -> list[Send] | Literal["noise_correct", "continue_write", "rescue", "finalize"]:
        """After generate: an extra's ``fan_out`` first (the self-consistency samples, whose join
        asks ``route_after_generate`` later), else straight on as ``route_after_generate`` says."""
        sends = self.fan_out(state, self.pipe.settings(runtime)) if self.fan_out is not None else []
        return sends or self.route_after_generate(state, runtime)

    def route_after_generate(
        self, state: State, runtime: Runtime[RouteConfig]
    ) -> Literal["noise_correct", "continue_write", "rescue", "finalize"]:
        """Noise correction if on; else continuation writing for failing or hard SQL."""
        cfg = self.pipe.settings(runtime)
        if cfg.noise_correction:
            return "noise_correct"
        return "continue_write" if self._needs_continuation(state, cfg) else self._finish(state, cfg)

    def route_after_correction(
        self, state: State, runtime: Runtime[RouteConfig]
    ) -> Literal["continue_write", "rescue", "finalize"]:
        """Continuation writing when the SQL still fails to execute or is hard (h(s, d) > threshold)."""
        cfg = self.pipe.settings(runtime)
        return "continue_write" if self._needs_continuation(state, cfg) else self._finish(state, cfg)

    def route_after_continuation(self, state: State, runtime: Runtime[RouteConfig]) -> Literal["rescue", "finalize"]:
        """The rescue stage when nothing executes yet, else finalize."""
        return self._finish(state, self.pipe.settings(runtime))

    def route_after_finalize(self, state: State, runtime: Runtime[RouteConfig]) -> Literal["review", "respond"]:
        """Human review of the final SQL when ``review_before_execution`` is on."""
        return "review" if self.pipe.settings(runtime).review_before_execution else "respond"

    def _needs_continuation(self, state: State, cfg: RouteConfig) -> bool:
        if not cfg.continuation_writing:
            return False
        if not (state.get("result") or {}).get("ok"):
            return True
        db = self.pipe.db
        return is_hard(state.get("sql") or "", db.schema, cfg.difficulty_threshold, db.dialect)

    def _finish(self, state: Mapping[str, Any], cfg: RouteConfig) -> Literal["rescue", "finalize"]:
        return "rescue" if cfg.rescue and nothing_executes(state) else "finalize"
