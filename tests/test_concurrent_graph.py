"""100 questions at once through the whole graph, per engine (issue 15): no error, no change.

A scripted model answers every call at once, so the graph's own concurrency (executor pool,
connection checkout, per-question state) is what is exercised: SQLite and DuckDB files stay
byte-identical, the PostgreSQL tables and server state unchanged, and every run returns the
current question's rows.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from route_graph import build_route_graph
from tests.fakes import make_concert_db, task_of

FRENCH = "SELECT name FROM singer WHERE country = 'France' ORDER BY name"
ANSWERS = {
    "sl": '{"singer": ["name", "country"]}',
    "ts": f"```sql\n{FRENCH}\n```",
    "nc": "The SQL is correct.",
    "nc_repair": f"```sql\n{FRENCH}\n```",
    "cw": f"```sql\n{FRENCH}\n```",
}
RUNS = 100


class SameAnswerModel(BaseChatModel):
    """Answers each task the same way every time (thread-safe: no state)."""

    @property
    def _llm_type(self) -> str:
        return "same-answer-fake"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=ANSWERS[task_of(messages)]))])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hundred_at_once(db: Any) -> list[dict]:
    graph = build_route_graph(SameAnswerModel(), db)
    with ThreadPoolExecutor(max_workers=RUNS) as pool:
        return list(pool.map(lambda i: graph.invoke({"question": f"Which singers are from France? ({i})"}), range(RUNS)))


def check(outs: list[dict], names: list[str]) -> None:
    assert len(outs) == RUNS
    for i, out in enumerate(outs):
        assert out["question"].endswith(f"({i})")
        assert out["result"]["ok"], out["result"]["error"]
        assert [row[0] for row in out["result"]["rows"]] == names


def test_hundred_concurrent_questions_on_sqlite(tmp_path: Path) -> None:
    path = make_concert_db(tmp_path / "concert.sqlite")
    before = sha(path)
    check(hundred_at_once(path), ["Edith", "Jacques"])
    assert sha(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["concert.sqlite"]


def test_hundred_concurrent_questions_on_duckdb(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    path = tmp_path / "concert.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER)")
        conn.execute("INSERT INTO singer VALUES (1, 'Edith', 'France', 47), (2, 'Adele', 'UK', 35), (3, 'Jacques', 'France', 60)")
    before = sha(path)
    check(hundred_at_once(f"duckdb:///{path}"), ["Edith", "Jacques"])
    assert sha(path) == before


def test_hundred_concurrent_questions_on_postgres(postgres_server) -> None:
    from tests.postgres_server import SPIDER_PG_SQL, server_state

    url = postgres_server.create_database("concurrency", SPIDER_PG_SQL)
    engine = sqlalchemy.create_engine(url)
    try:
        before = server_state(engine)
        check(hundred_at_once(engine), ["Justin Brown", "Rose White"])
        assert server_state(engine) == before
    finally:
        engine.dispose()
