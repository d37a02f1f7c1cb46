"""The nodes around the MCP stages: take up a question, rewrite a follow-up, human review, reply.

A thread (a checkpointer's ``thread_id``) keeps one conversation; each run answers one question.
``new_question`` starts every run and drops what the last question left; ``rewrite_question``
turns a chat follow-up into a standalone question (the stages see no history); ``review`` lets a
human approve, edit or reject the final SQL (``review_before_execution``); ``respond`` appends the
answer to ``messages``. The conversation helpers they use are in ``chat``.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime
from langgraph.types import Overwrite, interrupt

try:  # where LangGraph keeps the run's checkpointer in a node's config
    from langgraph._internal._constants import CONFIG_KEY_CHECKPOINTER
except ImportError:  # pragma: no cover - moved in another LangGraph version
    CONFIG_KEY_CHECKPOINTER = "__pregel_checkpointer"

from route_graph import prompts
from route_graph.errors import ConfigError, InputError
from route_graph.graph import chat
from route_graph.graph.calls import Meter
from route_graph.graph.context import RouteConfig
from route_graph.graph.pipeline import Node, Pipeline
from route_graph.graph.stages import RESPOND, REVIEW, REWRITE_QUESTION
from route_graph.graph.state import RouteState, TraceEntry
from route_graph.sql.result import ExecutionResult
from route_graph.views import execution_feedback, parsing

__all__ = ["REJECTED_ERROR", "new_question", "respond", "review", "rewrite_question"]

REJECTED_ERROR = "The reviewer rejected the SQL; no answer is returned."


def new_question(pipe: Pipeline) -> Node:
    """The ``new_question`` node of ``pipe``."""

    def node(state: RouteState, runtime: Runtime[RouteConfig], config: RunnableConfig) -> dict[str, Any]:
        """First node of every run: take up this run's question, drop what the last one left.

        A thread keeps its state between runs; without this reset an earlier question's trace,
        stage SQL and fallback candidates would leak into this one. The input is checked here,
        before any model call (``InputError``, ``ConfigError``).
        """
        cfg = pipe.settings(runtime)
        if cfg.review_before_execution and (config.get("configurable") or {}).get(CONFIG_KEY_CHECKPOINTER) is None:
            raise ConfigError(
                "review_before_execution pauses the run until you resume it, which needs a checkpointer: "
                "build_route_graph(llm, db, checkpointer=InMemorySaver()) and invoke with "
                "config={'configurable': {'thread_id': ...}} (Studio and langgraph dev provide both)."
            )
        turn = chat.resolve_question(state)
        hint = state.get("hint")
        if hint is not None and not isinstance(hint, str):
            raise InputError(f"The hint must be a string or None, got {type(hint).__name__}.")
        cfg.check_input(turn.question, hint)
        update: dict[str, Any] = {
            "question": turn.question,
            "asked_question": turn.question,
            "follow_up": turn.follow_up,
            "links": {},
            "draft_sql": None,
            "draft_result": None,
            "sql": "",
            "result": {},
            "stage": "",
            "sql_by_stage": Overwrite({}),
            "trace": Overwrite([]),
        }
        for extra in pipe.extras:  # its own state keys (the self-consistency samples)
            update.update(extra.reset())
        if turn.ask is not None:
            update["messages"] = [turn.ask]
        return update

    return node


def rewrite_question(pipe: Pipeline) -> Node:
    """The ``rewrite_question`` node of ``pipe``."""

    def node(state: RouteState, runtime: Runtime[RouteConfig], config: RunnableConfig) -> dict[str, Any]:
        """A chat follow-up ("and in France?") becomes a standalone question: the stages see no history."""
        cfg = pipe.settings(runtime)
        meter = Meter()
        original = state["question"]
        history = chat.chat_history(state.get("messages") or [], cfg.history_messages)
        answer = pipe.model.ask(
            meter, prompts.rewrite_messages(history, original), "", cfg, config, name="rewrite_question"
        )
        question = parsing.parse_rewrite(answer, original)
        entry: TraceEntry = {"stage": REWRITE_QUESTION.node, "original": original, "question": question, **meter.cost()}
        return {"question": question, "asked_question": question, "trace": [entry]}

    return node


def review(pipe: Pipeline) -> Node:
    """The ``review`` node of ``pipe``."""

    def node(state: RouteState, runtime: Runtime[RouteConfig]) -> dict[str, Any]:
        """Human review (``review_before_execution``): the final SQL waits in ``interrupt()``.

        Approved or edited SQL is executed through the guarded executor for the answer; rejected
        SQL gives no answer. An unusable resume value is asked for again (the payload then says
        why), since LangGraph keeps every resume value. The node reruns from its start on resume,
        so nothing happens before the interrupt.
        """
        cfg = pipe.settings(runtime)
        proposed = state.get("sql") or ""
        payload: dict[str, Any] = {
            "question": state.get("question"),
            "sql": proposed,
            "stage": state.get("stage"),
            "actions": ["approve", "edit", "reject"],
        }
        while True:
            try:
                action, sql = chat.review_decision(interrupt(payload), proposed)
                break
            except InputError as exc:
                payload = {**payload, "error": str(exc)}
        entry: TraceEntry = {"stage": REVIEW.node, "action": action, "proposed_sql": sql}
        if action == "reject":
            rejected = ExecutionResult(sql=sql, ok=False, error=REJECTED_ERROR, error_kind="rejected")
            entry.update(accepted=False, executed=False)
            return {"sql": "", "result": rejected.to_dict(), "stage": REVIEW.node, "trace": [entry]}
        result = pipe.execute(sql, cfg)
        entry.update(accepted=True, **pipe.outcome(result))
        update: dict[str, Any] = {"sql": sql, "result": result.to_dict(), "trace": [entry]}
        if action == "edit":
            update["stage"] = REVIEW.node
        return update

    return node


def respond(pipe: Pipeline) -> Node:
    """The ``respond`` node of ``pipe``."""

    def node(state: RouteState, runtime: Runtime[RouteConfig], config: RunnableConfig) -> dict[str, Any]:
        """Close the turn: append the answer (SQL + a small table) to ``messages``; the hint was this
        question's only."""
        cfg = pipe.settings(runtime)
        sql = state.get("sql") or ""
        result = state.get("result") or {}
        update: dict[str, Any] = {"hint": None}
        words = None
        if cfg.answer_in_words and result.get("ok"):
            meter = Meter()
            feedback = execution_feedback(ExecutionResult.from_dict(result), cfg.view())
            words = pipe.model.ask(
                meter, prompts.answer_messages(state["question"], sql, feedback), "", cfg, config,
                name="respond.answer",
            )
            update["trace"] = [{"stage": RESPOND.node, "answer": words.strip(), **meter.cost()}]
        update["messages"] = [chat.reply_message(chat.format_reply(sql, result, cfg.reply_rows, words))]
        return update

    return node
