"""Test doubles: a chat model scripted per ROUTE task, and a tiny concert database."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr


def task_of(messages: list[BaseMessage]) -> str:
    """Which ROUTE task (or chat step: rewrite, answer) a prompt is; the fake answers per task, since
    SL and TS run concurrently."""
    text = str(messages[-1].content)
    if "Which tables and columns are needed" in text:
        return "sl"
    if "Candidate SQL:" in text:
        return "nc"
    if "A previous attempt " in text:
        return "nc_repair"
    if "Complete the following unfinished SQL" in text:
        return "cw"
    if "Rewrite the follow-up question" in text:
        return "rewrite"
    if "Answer the question in one short sentence" in text:
        return "answer"
    return "ts"


class ScriptedChatModel(BaseChatModel):
    """Answers each task from its own script, in order; records every prompt it saw."""

    scripts: dict[str, list[str]]
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _calls: list[tuple[str, str]] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    @property
    def calls(self) -> list[tuple[str, str]]:
        return list(self._calls)

    def tasks(self) -> list[str]:
        return [task for task, _ in self._calls]

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        task = task_of(messages)
        with self._lock:
            script = self.scripts.get(task) or []
            if not script:
                raise AssertionError(f"unexpected {task} call; prompt:\n{messages[-1].content}")
            answer = script.pop(0)
            self._calls.append((task, str(messages[-1].content)))
        prompt_tokens = sum(len(str(m.content).split()) for m in messages)
        message = AIMessage(
            content=answer,
            usage_metadata={
                "input_tokens": prompt_tokens,
                "output_tokens": len(answer.split()),
                "total_tokens": prompt_tokens + len(answer.split()),
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


class ToolCallingFakeChatModel(GenericFakeChatModel):
    """LangChain's scripted chat model, usable by agents: ``bind_tools`` keeps the script."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ToolCallingFakeChatModel:
        return self


def make_singer_duckdb(path: Path) -> str:
    """A DuckDB file with one singer table (two French singers); its URL. Skips without duckdb."""
    import pytest

    duckdb = pytest.importorskip("duckdb", reason="optional extra route-graph[duckdb]")
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE singer (singer_id INTEGER, name TEXT, country TEXT)")
        conn.execute("INSERT INTO singer VALUES (1, 'Edith', 'France'), (2, 'Adele', 'UK'), (3, 'Jacques', 'France')")
    return f"duckdb:///{path}"


def make_concert_db(path: Path, extra_sql: Iterable[str] = ()) -> Path:
    """A four-table database in the style of Spider's concert_singer."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE stadium (stadium_id INTEGER PRIMARY KEY, name TEXT, capacity INTEGER);
        CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
        CREATE TABLE concert (
            concert_id INTEGER PRIMARY KEY, concert_name TEXT, year INTEGER,
            stadium_id INTEGER REFERENCES stadium(stadium_id));
        CREATE TABLE singer_in_concert (
            concert_id INTEGER REFERENCES concert(concert_id),
            singer_id INTEGER REFERENCES singer(singer_id),
            PRIMARY KEY (concert_id, singer_id));
        INSERT INTO stadium VALUES (1, 'Stade de France', 80000), (2, 'Wembley', 90000);
        INSERT INTO singer VALUES (1, 'Edith', 'France', 47), (2, 'Adele', 'UK', 35), (3, 'Jacques', 'France', 60);
        INSERT INTO concert VALUES (1, 'Spring', 2014, 1), (2, 'Summer', 2015, 2);
        INSERT INTO singer_in_concert VALUES (1, 1), (1, 3), (2, 2);
        """
    )
    for sql in extra_sql:
        conn.execute(sql)
    conn.commit()
    conn.close()
    return path


def shared_data_dir() -> Path | None:
    """The project's shared data (env ROUTE_GRAPH_DATA, else ../shared/data beside the repo)."""
    import os

    candidates = [os.environ.get("ROUTE_GRAPH_DATA"), Path(__file__).resolve().parents[1].parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "spider_train" / "valid.json").exists():
            return Path(candidate)
    return None


#: A scripted answer that makes ``SamplingChatModel`` raise instead of answering.
RAISE = "<raise>"


class SamplingChatModel(ScriptedChatModel):
    """A ``ScriptedChatModel`` that records each call's ``temperature`` argument (None: the call
    gave none) and raises ``RuntimeError`` for an answer scripted as ``RAISE``."""

    _temperatures: list[tuple[str, float | None]] = PrivateAttr(default_factory=list)

    @property
    def temperatures(self) -> list[tuple[str, float | None]]:
        """(task, temperature) per call, in the order the calls arrived."""
        return list(self._temperatures)

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        with self._lock:
            self._temperatures.append((task_of(messages), kwargs.get("temperature")))
        result = super()._generate(messages, stop, run_manager, **kwargs)
        if result.generations[0].message.content == RAISE:
            raise RuntimeError("scripted sampling failure")
        return result
