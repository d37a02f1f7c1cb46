"""Each stage's model call carries its own LangChain run name and tags (issue 14, item 6).

A LangSmith trace (or any callback handler) must tell apart the two concurrent schema-linking
calls, NC's verdict from its repair, and so on; the caller's callbacks and tags must still reach
every call.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langgraph.checkpoint.memory import InMemorySaver

from route_graph import RouteConfig, build_route_graph
from route_graph.graph.calls import MODEL_CALL_NAMES, RUN_TAG
from tests.fakes import ScriptedChatModel, make_concert_db, task_of

SQL_FRENCH = "SELECT name FROM singer WHERE country = 'France'"
SQL_THREE_TABLES = (
    "SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
    "JOIN concert AS T3 ON T2.concert_id = T3.concert_id WHERE T3.year = 2014"
)


def fence(sql: str) -> str:
    return f"```sql\n{sql}\n```"


class ModelCalls(BaseCallbackHandler):
    """Records (run name, tags, task, prompt) of every chat-model call it sees."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def on_chat_model_start(self, serialized: Any, messages: list[list[Any]], **kwargs: Any) -> None:
        with self._lock:
            self.calls.append(
                {
                    "name": kwargs.get("name"),
                    "tags": set(kwargs.get("tags") or ()),
                    "task": task_of(messages[0]),
                    "prompt": str(messages[0][-1].content),
                }
            )

    def names(self) -> list[str]:
        return sorted(c["name"] for c in self.calls)


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    return make_concert_db(tmp_path / "concert.sqlite")


def run_with(db_path: Path, scripts: dict[str, list[str]], config: RouteConfig | None = None) -> ModelCalls:
    llm = ScriptedChatModel(scripts=scripts)
    handler = ModelCalls()
    build_route_graph(llm, db_path, config).invoke(
        {"question": "Which singers are from France?"}, {"callbacks": [handler], "tags": ["mine"]}
    )
    assert all(not lines for lines in llm.scripts.values()), llm.scripts
    assert len(handler.calls) == len(llm.calls)  # the caller's callbacks saw every call
    return handler


def check_tags(handler: ModelCalls) -> None:
    for call in handler.calls:
        assert call["name"] in MODEL_CALL_NAMES, call
        stage = call["name"].split(".")[0]
        assert {RUN_TAG, stage, "mine"} <= call["tags"], call  # the caller's tags are kept


def test_mcp_calls_are_named_verdict_path(db_path: Path) -> None:
    handler = run_with(
        db_path,
        {
            "sl": ['{"singer": ["name"], "concert": ["year"], "singer_in_concert": []}'],
            "ts": [fence(SQL_THREE_TABLES), fence(SQL_THREE_TABLES)],
            "nc": ["The SQL is correct."],
            "cw": [fence("SELECT DISTINCT T1.name " + SQL_THREE_TABLES[len("SELECT T1.name "):])],
        },
        RouteConfig(nc_verdict=True),
    )
    assert handler.names() == sorted(
        ["schema_link.links", "schema_link.draft", "generate", "noise_correct.verdict", "continue_write"]
    )
    by_name = {c["name"]: c for c in handler.calls}
    # The two concurrent schema-linking calls are told apart by name, not only by prompt.
    assert by_name["schema_link.links"]["task"] == "sl"
    assert by_name["schema_link.draft"]["task"] == "ts"
    assert "CREATE TABLE stadium" in by_name["schema_link.draft"]["prompt"]  # draft: full schema
    assert "CREATE TABLE stadium" not in by_name["generate"]["prompt"]  # generate: linked schema
    assert by_name["noise_correct.verdict"]["task"] == "nc"
    assert by_name["continue_write"]["task"] == "cw"
    check_tags(handler)


def test_nc_repair_is_named_apart_from_the_verdict(db_path: Path) -> None:
    handler = run_with(
        db_path,
        {"ts": [fence("SELECT nme FROM singer")], "nc_repair": [fence(SQL_FRENCH)]},
        RouteConfig(schema_linking=False, continuation_writing=False),
    )
    assert handler.names() == ["generate", "noise_correct.repair"]
    assert next(c for c in handler.calls if c["name"] == "noise_correct.repair")["task"] == "nc_repair"
    check_tags(handler)


def test_rewrite_and_answer_calls_are_named(db_path: Path) -> None:
    llm = ScriptedChatModel(
        scripts={
            "ts": [fence("SELECT COUNT(*) FROM singer WHERE country = 'UK'"), fence(SQL_FRENCH)],
            "rewrite": ["Which singers are from France?"],
            "answer": ["Edith and Jacques."],
        }
    )
    graph = build_route_graph(llm, db_path, RouteConfig().with_stages(""), checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "t"}}
    graph.invoke({"question": "How many singers are from the UK?"}, thread)
    handler = ModelCalls()
    graph.invoke(
        {"messages": [("user", "and their names in France?")]},
        {**thread, "callbacks": [handler], "tags": ["mine"]},
        context={"answer_in_words": True},
    )
    assert [(c["name"], c["task"]) for c in handler.calls] == [
        ("rewrite_question", "rewrite"),
        ("generate", "ts"),
        ("respond.answer", "answer"),
    ]
    check_tags(handler)

