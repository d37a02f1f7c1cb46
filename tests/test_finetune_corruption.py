"""Rule-based corruptions of gold SQL (sqlglot AST edits) and the SQL text helpers for targets."""

from __future__ import annotations

import random

import pytest

from finetune.data.corruption import CORRUPTION_KINDS, corrupt_sql, render_sql
from finetune.data.sqltext import clause_boundaries, cut_prefix, normalize_sql
from route_graph.sql.opening import open_database
from tests.fakes import make_concert_db

JOIN_SQL = (
    "SELECT T1.concert_name FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id "
    "WHERE T2.name = 'Wembley' AND T1.year > 2014 ORDER BY T1.year DESC LIMIT 1"
)


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory):
    return open_database(make_concert_db(tmp_path_factory.mktemp("c") / "concert.sqlite")).schema


def kinds_of(sql: str, schema, kind: str) -> list[str]:
    return [c.sql for c in corrupt_sql(sql, schema, rng=random.Random(0), kinds=(kind,))]


def test_every_kind_proposes_edits_on_a_rich_query(schema) -> None:
    found = {c.kind for c in corrupt_sql(JOIN_SQL, schema, rng=random.Random(1))}
    assert found >= {"wrong_column", "drop_predicate", "alter_predicate", "wrong_join_key", "flip_order", "change_limit", "toggle_distinct"}
    assert set(CORRUPTION_KINDS) >= found


def test_edits_are_single_and_distinct_from_the_gold(schema) -> None:
    original = render_sql(JOIN_SQL)
    edits = corrupt_sql(JOIN_SQL, schema, rng=random.Random(0))
    assert edits and original not in {e.sql for e in edits}
    assert len({e.sql for e in edits}) == len(edits)


def test_drop_and_alter_predicate(schema) -> None:
    dropped = kinds_of(JOIN_SQL, schema, "drop_predicate")
    assert any("WHERE T2.name = 'Wembley' ORDER" in s for s in dropped)
    assert any("WHERE T1.year > 2014 ORDER" in s for s in dropped)
    single = kinds_of("SELECT name FROM singer WHERE age > 40", schema, "drop_predicate")
    assert single == ["SELECT name FROM singer"]
    altered = kinds_of(JOIN_SQL, schema, "alter_predicate")
    assert any("T2.name <> 'Wembley'" in s for s in altered)
    assert any("T1.year < 2014" in s for s in altered)
    assert any(" OR " in s for s in altered)
    negated = kinds_of("SELECT name FROM singer WHERE singer_id NOT IN (SELECT singer_id FROM singer_in_concert)", schema, "alter_predicate")
    assert any("NOT IN" not in s and " IN (" in s for s in negated)


def test_wrong_column_stays_in_the_same_table_and_type(schema) -> None:
    edits = kinds_of("SELECT name FROM singer WHERE age > 40", schema, "wrong_column")
    assert edits
    for sql in edits:
        assert "FROM singer" in sql and sql != "SELECT name FROM singer WHERE age > 40"
    # a text column is replaced by a text column, a number by a number (executable, plausible)
    assert any(s.startswith("SELECT country FROM") for s in edits)
    assert any("WHERE singer_id > 40" in s for s in edits)


def test_wrong_join_key_and_aggregate(schema) -> None:
    joins = kinds_of(JOIN_SQL, schema, "wrong_join_key")
    assert joins and all("ON T1.stadium_id = T2.stadium_id" not in s for s in joins)
    aggregates = kinds_of("SELECT max(capacity), avg(capacity), count(name) FROM stadium", schema, "wrong_aggregate")
    assert any("MIN(capacity)" in s for s in aggregates)
    assert any("COUNT(DISTINCT name)" in s for s in aggregates)
    assert any("AVG(capacity)" not in s for s in aggregates)


def test_flip_order_adds_no_nulls_clause(schema) -> None:
    for sql in ("SELECT name FROM singer ORDER BY age DESC", "SELECT name FROM singer ORDER BY age"):
        (flipped,) = kinds_of(sql, schema, "flip_order")
        assert "NULLS" not in flipped
        assert ("DESC" in flipped) != ("DESC" in sql)


def test_change_limit_and_distinct(schema) -> None:
    limits = kinds_of("SELECT name FROM singer ORDER BY age LIMIT 1", schema, "change_limit")
    assert "SELECT name FROM singer ORDER BY age" in limits
    assert any(s.endswith(("LIMIT 2", "LIMIT 3")) for s in limits)
    assert kinds_of("SELECT DISTINCT country FROM singer", schema, "toggle_distinct") == ["SELECT country FROM singer"]
    assert kinds_of("SELECT country FROM singer", schema, "toggle_distinct") == ["SELECT DISTINCT country FROM singer"]


def test_unparseable_sql_and_unknown_kinds(schema) -> None:
    assert corrupt_sql("SELEC name FROM", schema) == []
    with pytest.raises(ValueError, match="Unknown corruption"):
        corrupt_sql("SELECT 1", schema, kinds=("nope",))


def test_order_is_seeded_and_mixes_kinds(schema) -> None:
    a = corrupt_sql(JOIN_SQL, schema, rng=random.Random(5))
    b = corrupt_sql(JOIN_SQL, schema, rng=random.Random(5))
    assert a == b
    first_kinds = [c.kind for c in a[:4]]
    assert len(set(first_kinds)) == 4  # round-robin over kinds


def test_normalize_sql_keeps_quoted_text() -> None:
    assert normalize_sql("SELECT a ,  b FROM t WHERE x  =  'two  spaces' ;") == "SELECT a, b FROM t WHERE x = 'two  spaces'"
    assert normalize_sql('SELECT "a  b" FROM t') == 'SELECT "a  b" FROM t'


def test_clause_boundaries_and_prefixes() -> None:
    sql = "SELECT T1.name FROM singer AS T1 LEFT JOIN concert AS T2 ON T1.id = T2.id WHERE T2.year = 2014 ORDER BY T1.name LIMIT 3"
    prefixes = [cut_prefix(sql, c) for c in clause_boundaries(sql)]
    head = "SELECT T1.name FROM singer AS T1 LEFT JOIN concert AS T2 "
    assert prefixes == [
        "SELECT T1.name ",
        "SELECT T1.name FROM singer AS T1 ",  # before LEFT JOIN, not between LEFT and JOIN
        head,
        head + "ON T1.id = T2.id ",
        head + "ON T1.id = T2.id WHERE T2.year = 2014 ",
        head + "ON T1.id = T2.id WHERE T2.year = 2014 ORDER BY T1.name ",
    ]
    assert all(sql.startswith(p) for p in prefixes)
    assert clause_boundaries("SELECT 1") == []
