"""Graph state: what goes in (question, hint, or chat messages), what each stage leaves, what comes out.

One run answers one question; a thread (checkpointer) holds many. The first node resets every
per-question field (``trace`` and ``sql_by_stage`` through ``Overwrite``, past their reducers, and
each extra's own keys), so no stage and no answer sees an earlier question's candidates.
``messages`` is the conversation and keeps growing (LangGraph's ``add_messages``).

An extra (``route_graph.graph.extras``) adds its state keys to ``RouteState`` when it is built in
(``state_schema``): ``samples`` (self_consistency), ``value_matches`` (value_retrieval).

``TraceEntry`` is the contract the evaluation, the CLI and stored runs read: its keys never change
meaning, and its values are plain JSON, so a run's trace is stored as it is.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_type_hints

# typing_extensions' TypedDict: pydantic (LangGraph Studio's input/output forms) rejects
# typing.TypedDict on Python < 3.12.
from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import NotRequired, Required, TypedDict

if TYPE_CHECKING:
    from route_graph.graph.extras import Extra

__all__ = ["RouteInput", "RouteOutput", "RouteState", "SampleTask", "TraceEntry", "state_schema"]


class TraceEntry(TypedDict, total=False):
    """What one stage did for one question: what it proposed, whether that executed and was taken,
    and its cost. ``stage`` is the node id (``stages.STAGES``); each stage sets the keys it has."""

    stage: Required[str]
    # The SQL it proposed and its execution (the SQL-writing stages and review).
    proposed_sql: str | None
    accepted: bool
    executed: bool
    rows: int | None
    error: str | None
    # Its cost (every node that asks the model).
    llm_calls: int
    input_tokens: int
    output_tokens: int
    seconds: float
    # retrieve_values (the value_retrieval extra)
    value_matches: list[dict[str, Any]]
    value_seconds: float
    value_error: str
    # schema_link
    model_links: dict[str, list[str]]
    hallucinated: list[str]
    sql_links: dict[str, list[str]]
    links_error: str
    recall_added: dict[str, Any]
    links: dict[str, list[str]]
    fallback_full_schema: bool
    # generate
    schema_tables: list[str] | Literal["full"]
    requalified: dict[str, Any]
    # self_consistency (the self_consistency extra)
    samples: int
    temperature: float
    executed_samples: int
    distinct_results: int
    failed_calls: int
    proposals: list[dict[str, Any]]
    # noise_correct ("reason" also continue_write's: "hard" or "not_executable")
    mode: Literal["skipped", "verdict", "repair"]
    reason: str
    problem: Literal["error", "empty", "null"]
    verdict: Literal["correct", "incorrect", "unclear", "repair"]
    # continue_write
    schema: Literal["reduced", "full"]
    # rescue
    attempts: list[dict[str, Any]]
    # finalize
    winner: str
    vote: dict[str, Any]
    changed: bool
    fallback: bool
    # rewrite_question
    original: str
    question: str
    # review
    action: Literal["approve", "edit", "reject"]
    # respond
    answer: str


def _merge(left: dict[str, str] | None, right: dict[str, str] | None) -> dict[str, str]:
    return {**(left or {}), **(right or {})}


class RouteInput(TypedDict, total=False):
    """``graph.invoke({"question": ..., "hint": ...})`` or ``{"messages": [...]}`` (chat).

    The hint is optional (BIRD's evidence). Without a new ``question``, the last human message is
    the question; a follow-up is rewritten into a standalone question using the earlier messages.
    """

    question: NotRequired[str]
    hint: NotRequired[str | None]
    messages: NotRequired[Annotated[list[AnyMessage], add_messages]]


class RouteOutput(TypedDict, total=False):
    """The answer: final SQL, its execution result, the stage that produced it, and the trace."""

    question: str
    sql: str
    result: dict[str, Any]
    stage: str
    links: dict[str, list[str]]
    sql_by_stage: dict[str, str]
    trace: list[TraceEntry]
    messages: Annotated[list[AnyMessage], add_messages]


class RouteState(TypedDict, total=False):
    """Everything the nodes read and write; ``trace`` and ``sql_by_stage`` accumulate per question."""

    question: str
    hint: str | None
    messages: Annotated[list[AnyMessage], add_messages]
    asked_question: str | None  # the question the thread took up last: tells a new one from a stale one
    follow_up: bool  # this run's question is a chat follow-up, to be rewritten first
    links: dict[str, list[str]]
    draft_sql: str | None
    draft_result: dict[str, Any] | None
    sql: str
    result: dict[str, Any]
    stage: str
    sql_by_stage: Annotated[dict[str, str], _merge]
    trace: Annotated[list[TraceEntry], operator.add]


class SampleTask(TypedDict):
    """What one ``Send`` to ``sample_generate`` carries: the fields generate's prompt is built from,
    and the sample's number (1..K, its candidate name and its place in the vote's order).
    ``value_matches`` is None without the value_retrieval extra."""

    question: str
    hint: str | None
    links: dict[str, list[str]] | None
    value_matches: list[dict[str, Any]] | None
    index: int


def state_schema(extras: Iterable[Extra]) -> type:
    """``RouteState`` with the state keys of ``extras`` (``Extra.state``); ``RouteState`` itself
    when they add none, so a graph without extras has exactly its keys."""
    added: dict[str, Any] = {}
    for extra in extras:
        added.update(extra.state())
    if not added:
        return RouteState
    keys = {**get_type_hints(RouteState, include_extras=True), **added}
    return TypedDict("RouteState", keys, total=False)  # type: ignore[misc]  # keys known at run time
