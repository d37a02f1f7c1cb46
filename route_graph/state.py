"""Graph state: what goes in (question, hint), what each stage leaves, what comes out."""

from __future__ import annotations

import operator
from typing import Annotated, Any

# typing_extensions' TypedDict: pydantic (LangGraph Studio's input/output forms) rejects
# typing.TypedDict on Python < 3.12.
from typing_extensions import NotRequired, TypedDict

__all__ = ["RouteInput", "RouteOutput", "RouteState", "TraceEntry"]

TraceEntry = dict[str, Any]


def _merge(left: dict[str, str] | None, right: dict[str, str] | None) -> dict[str, str]:
    return {**(left or {}), **(right or {})}


class RouteInput(TypedDict):
    """``graph.invoke({"question": ..., "hint": ...})``; the hint is optional (BIRD's evidence)."""

    question: str
    hint: NotRequired[str | None]


class RouteOutput(TypedDict, total=False):
    """The answer: final SQL, its execution result, the stage that produced it, and the trace."""

    question: str
    sql: str
    result: dict[str, Any]
    stage: str
    links: dict[str, list[str]]
    sql_by_stage: dict[str, str]
    trace: list[TraceEntry]


class RouteState(TypedDict, total=False):
    """Everything the nodes read and write; ``trace`` and ``sql_by_stage`` accumulate."""

    question: str
    hint: str | None
    links: dict[str, list[str]]
    draft_sql: str | None
    draft_result: dict[str, Any] | None
    sql: str
    result: dict[str, Any]
    stage: str
    sql_by_stage: Annotated[dict[str, str], _merge]
    trace: Annotated[list[TraceEntry], operator.add]
