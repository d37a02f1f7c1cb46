"""Deterministic alias repair: fixture pairs (SQL + engine error -> repaired SQL or None)."""

from __future__ import annotations

from pathlib import Path

import pytest

from route_graph.repair import (
    MissingColumn,
    missing_column,
    quoted_string_fix,
    single_quoted_literals,
    requalify_column,
)
from route_graph.sql.execute import execute_sql
from route_graph.sql.opening import open_database
from tests.fakes import make_concert_db, make_singer_duckdb

JOIN = "FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory):
    return open_database(make_concert_db(Path(tmp_path_factory.mktemp("repair")) / "concert.sqlite"))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("no such column: T2.name", MissingColumn("T2", "name")),
        ('Binder Error: Table "t2" does not have a column named "name"', MissingColumn("t2", "name")),
        ('column t2.name does not exist', MissingColumn("t2", "name")),
        ("Unknown column 'T2.name' in 'field list'", MissingColumn("T2", "name")),
        ("no such column: name", None),  # not qualified: no alias to correct
        ("near \"FORM\": syntax error", None),
        (None, None),
    ],
)
def test_missing_column_from_engine_errors(error: str | None, expected: MissingColumn | None) -> None:
    assert missing_column(error) == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # the one joined table that has the column
        (f"SELECT T2.name {JOIN}", f"SELECT T1.name {JOIN}"),
        # every occurrence, in any clause
        (
            f"SELECT T2.name {JOIN} WHERE T2.name LIKE 'E%' ORDER BY T2.name",
            f"SELECT T1.name {JOIN} WHERE T1.name LIKE 'E%' ORDER BY T1.name",
        ),
        # the table's own name used where the query aliased it
        (f"SELECT singer.name {JOIN}", f"SELECT T1.name {JOIN}"),
        # inside a subquery, against that subquery's tables
        (
            f"SELECT concert_name FROM concert WHERE concert_id IN (SELECT T1.concert_id {JOIN})",
            f"SELECT concert_name FROM concert WHERE concert_id IN (SELECT T2.concert_id {JOIN})",
        ),
    ],
)
def test_requalify_fixture_pairs(db, sql: str, expected: str) -> None:
    error = execute_sql(db, sql).error
    repaired = requalify_column(sql, error, db.schema, db.dialect)
    assert repaired == expected
    assert execute_sql(db, repaired).ok


@pytest.mark.parametrize(
    "sql",
    [
        # two joined tables have "name" (singer, stadium): ambiguous, left to the model
        (
            f"SELECT T2.name {JOIN} JOIN concert AS T3 ON T2.concert_id = T3.concert_id "
            "JOIN stadium AS T4 ON T3.stadium_id = T4.stadium_id"
        ),
        # a self-join: two aliases of the one table that has it
        (
            "SELECT T3.name FROM singer AS T1 JOIN singer AS T2 ON T1.age < T2.age "
            "JOIN singer_in_concert AS T3 ON T3.singer_id = T1.singer_id"
        ),
        # no joined table has the column
        f"SELECT T2.capacity {JOIN}",
    ],
)
def test_requalify_refuses_to_guess(db, sql: str) -> None:
    error = execute_sql(db, sql).error
    assert error and "no such column" in error
    assert requalify_column(sql, error, db.schema, db.dialect) is None


def test_requalify_ignores_other_errors_and_unparseable_sql(db) -> None:
    assert requalify_column("SELECT nme FROM singer", "no such column: nme", db.schema) is None
    assert requalify_column(f"SELECT T2.name {JOIN}", "near FORM: syntax error", db.schema) is None
    assert requalify_column("SELECT T2.name FROM (((", "no such column: T2.name", db.schema) is None
    deep = "SELECT " + "(" * 5_000 + "T2.name" + ")" * 5_000 + f" {JOIN}"
    assert requalify_column(deep, "no such column: T2.name", db.schema) is None


# ----------------------------------------------------------------------- double-quoted literals

PG_ERROR = 'column "France" does not exist\nLINE 1: SELECT name FROM singer WHERE country = "France"'
DUCK_ERROR = 'Binder Error: Referenced column "France" not found in FROM clause!\nCandidate bindings: "country"'


@pytest.mark.parametrize("error", [PG_ERROR, DUCK_ERROR])
@pytest.mark.parametrize("dialect", ["postgres", "duckdb"])
def test_a_double_quoted_literal_becomes_a_string(db, error: str, dialect: str) -> None:
    fixed = quoted_string_fix('SELECT name FROM singer WHERE country = "France"', error, db.schema, dialect)
    assert fixed == "SELECT name FROM singer WHERE country = 'France'"


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        # a quoted name the schema has as a column is an identifier, whatever the error says
        ('SELECT "name" FROM singer WHERE country = \'France\'', 'column "name" does not exist'),
        # qualified: a column reference, not a literal
        ('SELECT T1."France" FROM singer AS T1', PG_ERROR),
        # another error, or a quoted name the error does not name
        ('SELECT name FROM singer WHERE country = "France"', "no such table: singer"),
        ('SELECT name FROM singer WHERE country = "Spain"', PG_ERROR),
        ('SELECT name FROM singer WHERE country = "France"', None),
    ],
)
def test_quoted_names_that_are_not_literals_are_left_alone(db, sql: str, error: str | None) -> None:
    assert quoted_string_fix(sql, error, db.schema, "postgres") is None


def test_the_fixed_sql_runs_on_duckdb(tmp_path: Path) -> None:
    duck = open_database(make_singer_duckdb(tmp_path / "concert.duckdb"))
    sql = 'SELECT name FROM singer WHERE country = "France" OR name = "Adele" ORDER BY name'
    first = execute_sql(duck, sql)
    assert not first.ok and "France" in (first.error or "")
    once = quoted_string_fix(sql, first.error, duck.schema, duck.dialect)  # the engine names one at a time
    second = execute_sql(duck, once)
    twice = quoted_string_fix(once, second.error, duck.schema, duck.dialect) if not second.ok else once
    result = execute_sql(duck, twice)
    assert result.ok and [row[0] for row in result.rows] == ["Adele", "Edith", "Jacques"], (twice, result.error)


# ------------------------------------------------------------- training targets: single quotes


def test_double_quoted_literals_of_a_target_become_single_quoted(db) -> None:
    gold = 'SELECT name FROM singer WHERE country = "France" AND name != "it\'s"'
    assert single_quoted_literals(gold, db.schema) == "SELECT name FROM singer WHERE country = 'France' AND name <> 'it''s'"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT name FROM singer WHERE country = 'France'",  # nothing to change
        'SELECT "name" FROM singer',  # a column of the schema
        'SELECT count(*) AS "n", country FROM singer GROUP BY country ORDER BY "n"',  # the query's alias
        'SELECT T1."France" FROM singer AS T1',  # qualified: a column reference
        "SELECT name FROM WHERE",  # does not parse
    ],
)
def test_quoted_names_that_may_be_identifiers_keep_their_quotes(db, sql: str) -> None:
    assert single_quoted_literals(sql, db.schema) is None
