"""Schema-linking precision/recall of the reduced schema against the gold SQL's items.

Gold items come from sqlglot with aliases, self-joins and subqueries resolved; the predicted side
is the graph's ``links`` (the reduced schema the generator saw).
"""

from __future__ import annotations

import pytest

from route_graph.evaluation.attribution import question_attribution
from route_graph.evaluation.metrics import ExecutionScorer
from route_graph.sql.opening import open_database
from tests.fakes import make_concert_db


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory):
    return open_database(make_concert_db(tmp_path_factory.mktemp("link") / "concert.sqlite"))


def output(links, *, linked: bool = True) -> dict:
    trace = [{"stage": "schema_link", "proposed_sql": "SELECT 1", "executed": True, "llm_calls": 2}] if linked else []
    trace += [{"stage": "generate", "proposed_sql": "SELECT 1", "executed": True, "llm_calls": 1}, {"stage": "finalize"}]
    return {"sql": "SELECT 1", "links": links, "sql_by_stage": {"generate": "SELECT 1"}, "trace": trace}


def scores(db, gold: str, links, **kw) -> dict | None:
    return question_attribution(output(links, **kw), ExecutionScorer(db, gold), db)["link_scores"]


def test_aliases_are_resolved(db) -> None:
    gold = "SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id"
    s = scores(db, gold, {"singer": ["singer_id", "name", "country"]})
    assert (s["table_precision"], s["table_recall"]) == (1.0, 0.5)
    assert s["column_precision"] == pytest.approx(2 / 3) and s["column_recall"] == pytest.approx(2 / 3)
    assert s["strict_recall"] is False


def test_self_join_counts_one_table(db) -> None:
    gold = "SELECT a.name FROM singer a JOIN singer b ON a.country = b.country WHERE b.age > 40"
    s = scores(db, gold, {"singer": ["name", "country", "age"]})
    assert (s["table_precision"], s["table_recall"], s["column_precision"], s["column_recall"]) == (1, 1, 1, 1)
    assert s["strict_recall"] is True


def test_subquery_items_are_gold_items(db) -> None:
    gold = "SELECT concert_name FROM concert WHERE stadium_id IN (SELECT stadium_id FROM stadium WHERE capacity > 85000)"
    s = scores(db, gold, {"stadium": ["stadium_id"], "concert": ["concert_name", "stadium_id"]})
    assert s["table_recall"] == 1.0 and s["column_precision"] == 1.0
    assert s["column_recall"] == pytest.approx(3 / 4)  # stadium.capacity was pruned
    assert s["strict_recall"] is False
    assert (s["kept_tables"], s["kept_columns"], s["total_tables"], s["total_columns"]) == (2, 3, 4, 13)


def test_empty_links_mean_the_full_schema(db) -> None:
    s = scores(db, "SELECT name FROM singer", {})
    assert s["table_precision"] == 0.25 and s["column_precision"] == pytest.approx(1 / 13)
    assert s["strict_recall"] is True and s["kept_columns"] == 13


def test_no_schema_linking_no_scores(db) -> None:
    assert scores(db, "SELECT name FROM singer", None, linked=False) is None


def test_count_star_gold_has_no_columns(db) -> None:
    s = scores(db, "SELECT count(*) FROM singer", {"singer": ["name"]})
    assert s["table_recall"] == 1.0 and s["column_recall"] == 1.0 and s["column_precision"] == 0.0
