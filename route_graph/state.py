"""Graph state: what goes in (question, hint, or chat messages), what each stage leaves, what comes out.

One run answers one question; a thread (checkpointer) holds many. The first node resets every
per-question field (``trace``, ``sql_by_stage`` and ``samples`` through ``Overwrite``, past their reducers), so
no stage and no answer sees an earlier question's candidates. ``messages`` is the conversation and
keeps growing (LangGraph's ``add_messages``).
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

# typing_extensions' TypedDict: pydantic (LangGraph Studio's input/output forms) rejects
# typing.TypedDict on Python < 3.12.
from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import NotRequired, TypedDict

__all__ = ["RouteInput", "RouteOutput", "RouteState", "SampleTask", "TraceEntry"]

TraceEntry = dict[str, Any]


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
    value_matches: list[dict[str, Any]] | None  # retrieved values (values.ValueMatch.to_dict); None: not yet
    sql_by_stage: Annotated[dict[str, str], _merge]
    # Self-consistency samples (RouteConfig.self_consistency): one dict per sample, written by the
    # concurrent sample_generate runs, hence a list with an additive reducer; finalize votes on them.
    samples: Annotated[list[dict[str, Any]], operator.add]
    trace: Annotated[list[TraceEntry], operator.add]


class SampleTask(TypedDict):
    """What one ``Send`` to ``sample_generate`` carries: the fields generate's prompt is built from,
    and the sample's number (1..K, its candidate name and its place in the vote's order)."""

    question: str
    hint: str | None
    links: dict[str, list[str]] | None
    value_matches: list[dict[str, Any]] | None
    index: int
