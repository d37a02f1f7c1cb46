"""Conversation glue: which question a run answers, the chat history, the reply, review, tools.

A thread (a checkpointer's ``thread_id``) keeps one conversation; each run answers one question.
The question is ``question`` when the run gives a new one, else the thread's last, unanswered
human message; a follow-up with earlier turns is rewritten into a standalone question first,
because the SQL stages see only the question, never the history. Every run ends by appending
an AI message (the SQL and a small result table) to ``messages``, so chat UIs and agents can
use the graph as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from route_graph.errors import InputError
from route_graph.prompts import answer_text

__all__ = [
    "ASK_HINT",
    "QuestionTurn",
    "ReviewAction",
    "as_sql_tool",
    "chat_history",
    "compact_output",
    "format_reply",
    "message_text",
    "question_tool_schema",
    "reply_message",
    "resolve_question",
    "review_decision",
]

ASK_HINT = (
    "Pass the question as graph.invoke({'question': 'How many singers are there?'}) "
    "or as the last human message: graph.invoke({'messages': [('user', 'How many singers are there?')]})."
)

ReviewAction = Literal["approve", "edit", "reject"]

_VALUE_CHARS = 60


@dataclass(frozen=True)
class QuestionTurn:
    """The question one run answers and where it came from."""

    question: str
    follow_up: bool  # from messages with earlier turns: rewrite into a standalone question first
    ask: HumanMessage | None  # the human message to append (question given as ``question``)


def message_text(message: BaseMessage) -> str:
    """The text of a message (string content, or the text blocks of a content list)."""
    return answer_text(message.content)


def _is_turn(message: BaseMessage) -> bool:
    """Human and AI messages with text count as conversation; tool traffic and system text do not."""
    return message.type in ("human", "ai") and bool(message_text(message).strip())


def chat_history(messages: Sequence[BaseMessage], limit: int) -> list[dict[str, str]]:
    """The last ``limit`` turns before the pending question, as prompt messages."""
    turns = [m for m in messages[:-1] if _is_turn(m)]
    if limit <= 0:
        return []
    return [
        {"role": "user" if m.type == "human" else "assistant", "content": message_text(m)}
        for m in turns[-limit:]
    ]


def _checked(question: Any, source: str) -> str:
    if not isinstance(question, str):
        raise InputError(f"The question ({source}) must be a string, got {type(question).__name__}. {ASK_HINT}")
    if not question.strip():
        raise InputError(f"The question ({source}) is empty. {ASK_HINT}")
    return question.strip()


def resolve_question(state: Mapping[str, Any]) -> QuestionTurn:
    """This run's question; raises ``InputError`` (before any model call) when there is none.

    ``question`` is new when it differs from the one the thread took up last (``asked_question``);
    otherwise the thread's last message, if it is a human one, is the question (every answered
    run ends with an AI message). Asking the same ``question`` again re-answers it.
    """
    messages: list[BaseMessage] = list(state.get("messages") or [])
    pending = messages[-1] if messages and messages[-1].type == "human" else None
    given = state.get("question")
    if given is not None and given != state.get("asked_question"):
        question = _checked(given, "'question'")
        return QuestionTurn(question, follow_up=False, ask=None if pending else HumanMessage(question))
    if pending is not None:
        question = _checked(message_text(pending), "the last human message")
        return QuestionTurn(question, follow_up=bool(chat_history(messages, 1)), ask=None)
    if given is not None:  # the same question again, no new message: answer it again
        return QuestionTurn(_checked(given, "'question'"), follow_up=False, ask=HumanMessage(given))
    raise InputError(f"No question given. {ASK_HINT}")


def review_decision(resume: Any, current_sql: str) -> tuple[ReviewAction, str]:
    """Action and SQL from a review's resume value (``{"action": ..., "sql": ...}`` or the action)."""
    usage = (
        "Resume the review with Command(resume={'action': 'approve'}), "
        "Command(resume={'action': 'edit', 'sql': 'SELECT ...'}) or Command(resume={'action': 'reject'})."
    )
    if isinstance(resume, str):
        resume = {"action": resume}
    if not isinstance(resume, Mapping):
        raise InputError(f"Unusable review answer {resume!r}. {usage}")
    action = str(resume.get("action", "")).strip().lower()
    if action == "approve":
        return "approve", current_sql
    if action == "reject":
        return "reject", current_sql
    if action == "edit":
        sql = resume.get("sql")
        if not isinstance(sql, str) or not sql.strip():
            raise InputError(f"An 'edit' review needs the edited SQL as 'sql'. {usage}")
        return "edit", sql.strip()
    raise InputError(f"Unknown review action {resume.get('action')!r}. {usage}")


def _cell(value: Any) -> str:
    text = "NULL" if value is None else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


def format_reply(sql: str, result: Mapping[str, Any], rows: int, answer: str | None = None) -> str:
    """The chat reply: an optional sentence, the SQL, and the first ``rows`` rows as a Markdown table."""
    parts = [answer.strip()] if answer and answer.strip() else []
    if sql:
        parts.append(f"```sql\n{sql.strip()}\n```")
    if not result.get("ok"):
        parts.append(f"No result: {result.get('error') or 'the query did not execute.'}")
        return "\n\n".join(parts)
    columns = [str(c) for c in result.get("columns") or []]
    data = list(result.get("rows") or [])
    count = int(result.get("row_count", len(data)))
    if columns and data and rows > 0:
        table = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + " --- |" * len(columns)]
        table += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in data[:rows]]
        parts.append("\n".join(table))
    more = "+" if result.get("truncated") else ""
    shown = f" (first {rows} shown)" if count > rows > 0 and columns else ""
    parts.append(f"{count}{more} row{'s' if count != 1 else ''}{shown}.")
    return "\n\n".join(parts)


def compact_output(output: Mapping[str, Any], max_rows: int = 20) -> dict[str, Any]:
    """What a tool caller needs from a run: the SQL and the first rows, not the trace."""
    result = output.get("result") or {}
    return {
        "question": output.get("question"),
        "sql": output.get("sql") or "",
        "ok": bool(result.get("ok")),
        "columns": list(result.get("columns") or []),
        "rows": [list(r) for r in (result.get("rows") or [])[:max_rows]],
        "row_count": int(result.get("row_count", 0) or 0),
        "truncated": bool(result.get("truncated")) or int(result.get("row_count", 0) or 0) > max_rows,
        "error": result.get("error"),
    }


class _SQLToolArgs(BaseModel):
    question: str = Field(description="One standalone question about the database, in natural language.")
    hint: str | None = Field(default=None, description="Optional domain knowledge that helps write the SQL.")


def as_sql_tool(
    graph: Runnable,
    *,
    name: str = "query_database",
    description: str = (
        "Answer a question about the database: writes SQL with ROUTE's text-to-SQL pipeline, runs it "
        "read-only and returns the SQL and the first result rows."
    ),
    max_rows: int = 20,
) -> BaseTool:
    """A LangChain tool over a ROUTE graph with compact output (``compact_output``), for agents.

    ``graph.as_tool()`` works too, but returns the whole state (trace, messages, every stage's
    SQL), which wastes an agent's context. Each call is one independent question.
    """

    def run(question: str, hint: str | None = None, *, config: RunnableConfig) -> dict[str, Any]:
        return compact_output(graph.invoke({"question": question, "hint": hint}, config), max_rows)

    async def arun(question: str, hint: str | None = None, *, config: RunnableConfig) -> dict[str, Any]:
        return compact_output(await graph.ainvoke({"question": question, "hint": hint}, config), max_rows)

    return StructuredTool.from_function(
        func=run, coroutine=arun, name=name, description=description, args_schema=_SQLToolArgs
    )


def question_tool_schema(graph: Any) -> Any:
    """``graph`` whose ``as_tool()`` takes the question alone (hint optional).

    LangChain builds ``as_tool()``'s arguments from the graph's input TypedDict with every key
    required, so ``graph.as_tool()`` refused ``{"question": ...}`` without ``hint`` and ``messages``.
    The compiled graph's ``as_tool`` now defaults to ``_SQLToolArgs`` (a schema passed by the caller
    still wins); it returns the whole state, ``as_sql_tool`` the compact output.
    """
    plain = type(graph).as_tool

    def as_tool(args_schema: Any = None, **kwargs: Any) -> BaseTool:
        return plain(graph, args_schema or _SQLToolArgs, **kwargs)

    graph.as_tool = as_tool
    return graph


def reply_message(text: str) -> AIMessage:
    """The AI message a run appends to ``messages`` (programs read ``sql``/``result`` instead)."""
    return AIMessage(content=text)
