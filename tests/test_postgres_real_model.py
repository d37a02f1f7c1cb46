"""The real offline model answers real Spider questions on PostgreSQL (issue 14 item 5).

A Spider valid database is loaded into the live throwaway server (tests/postgres_server.py) the
way a user would port it, and the default model answers through a ``postgresql+psycopg://`` URL
with the default graph. Scored against the same gold SQL on the SQLite original.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from route_graph import build_route_graph, load_chat_model
from route_graph.evaluation.metrics import results_match
from tests.fakes import shared_data_dir
from tests.postgres_server import copy_sqlite_database

pytestmark = pytest.mark.slow
DB_ID = "entrepreneur"


def test_real_model_answers_spider_questions_on_postgres(postgres_server) -> None:
    data = shared_data_dir()
    if data is None:
        pytest.fail("shared data not found: set ROUTE_GRAPH_DATA to the folder holding spider_train/")
    sqlite_path = data / "spider_train" / "database" / DB_ID / f"{DB_ID}.sqlite"
    url = postgres_server.create_database("spider_entrepreneur", "")
    copy_sqlite_database(sqlite_path, url)
    questions = [q for q in json.loads((data / "spider_train" / "valid.json").read_text()) if q["db_id"] == DB_ID][:4]
    graph = build_route_graph(load_chat_model(), url)
    gold_db = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    correct = executed = 0
    for q in questions:
        out = graph.invoke({"question": q["question"]})
        assert out["trace"][-1]["stage"] == "finalize", out["trace"]
        executed += bool(out["result"]["ok"])
        gold = gold_db.execute(q["query"]).fetchall()
        correct += out["result"]["ok"] and results_match(gold, [tuple(r) for r in out["result"]["rows"]], order_matters=False)
    print(f"\n{correct}/{len(questions)} correct, {executed} executed on PostgreSQL")
    assert executed >= 3 and correct >= 2  # e.g. "How many entrepreneurs are there?" on a real server
