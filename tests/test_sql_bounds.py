"""Bounded work on untrusted model text: size/nesting caps, linear-time parsers, no RecursionError.

The adversarial inputs below took minutes to hours with the earlier quadratic regexes; a
regression shows up as a hung test (no timing is asserted).
"""

from __future__ import annotations

import pytest

from route_graph import prompts
from route_graph.linking import is_hard, links_from_sql, sql_table_count
from route_graph.sql.execute import execute_sql
from route_graph.sql.guard import check_read_only
from route_graph.sql.opening import open_database
from route_graph.sql_bounds import (
    MAX_MODEL_SQL_CHARS,
    MAX_SQL_NESTING,
    check_sql_bounds,
    nesting_depth,
)
from route_graph.views import parsing
from tests.fakes import make_concert_db

NESTED_PARENS = "SELECT " + "(" * 3_000 + "1" + ")" * 3_000
NESTED_SUBQUERIES = "SELECT * FROM " + "(SELECT * FROM " * 150 + "singer" + ")" * 150
# Deep without parentheses: only sqlglot's RecursionError can tell.
NESTED_NOT = "SELECT " + "NOT " * 2_000 + "1"
NESTED_CASE = "SELECT " + "CASE WHEN 1 THEN " * 500 + "1" + " END" * 500
DEEP_SQL = [NESTED_PARENS, NESTED_SUBQUERIES, NESTED_NOT, NESTED_CASE]


@pytest.fixture(scope="module")
def concert(tmp_path_factory: pytest.TempPathFactory):
    return open_database(make_concert_db(tmp_path_factory.mktemp("concert") / "concert.sqlite"))


@pytest.mark.parametrize(
    ("sql", "depth"),
    [
        ("SELECT 1", 0),
        ("SELECT (1)", 1),
        ("SELECT * FROM (SELECT max(a) FROM (SELECT (a) FROM t))", 3),
        ("SELECT '((((' , \"(\" , `(` FROM t -- (((\n", 0),
        ("SELECT /* ((( */ (1) /* unterminated ((((", 1),
        ("SELECT 'it''s (' || (x)", 1),
        ("SELECT ))) ((", 2),  # unbalanced text still gets a bounded answer
        ("SELECT '" + "(" * 100, 0),  # unterminated string
    ],
)
def test_nesting_depth_ignores_strings_and_comments(sql: str, depth: int) -> None:
    assert nesting_depth(sql) == depth


def test_bounds_say_what_to_do() -> None:
    ok = "SELECT " + "(" * MAX_SQL_NESTING + "1" + ")" * MAX_SQL_NESTING
    assert check_sql_bounds(ok) is None
    deep = check_sql_bounds("SELECT " + "(" * (MAX_SQL_NESTING + 1) + "1" + ")" * (MAX_SQL_NESTING + 1))
    assert deep is not None and f"{MAX_SQL_NESTING + 1} levels" in deep and "flatter" in deep
    long_sql = "SELECT 1" + " " * MAX_MODEL_SQL_CHARS
    reason = check_sql_bounds(long_sql)
    assert reason is not None and str(MAX_MODEL_SQL_CHARS) in reason and "shorter" in reason
    assert check_read_only(long_sql) == reason


@pytest.mark.parametrize("sql", DEEP_SQL, ids=["parens", "subqueries", "not", "case"])
def test_deep_sql_is_failing_sql_not_an_exception(sql: str, concert) -> None:
    assert links_from_sql(sql, concert.schema) is None  # "does not parse"
    assert sql_table_count(sql, concert.schema) == 0 and is_hard(sql, concert.schema)
    result = execute_sql(concert, sql)
    assert not result.ok and result.error and result.error_kind in ("rejected", "error")


def test_deep_parentheses_are_rejected_before_parsing(concert) -> None:
    for sql in (NESTED_PARENS, NESTED_SUBQUERIES):
        assert links_from_sql(sql, concert.schema) is None
        assert sql_table_count(sql, concert.schema) == 0 and is_hard(sql, concert.schema)
        result = execute_sql(concert, sql)
        assert (result.ok, result.error_kind) == (False, "rejected")
        assert "levels deep" in (result.error or "")


def test_shallow_nesting_still_links_and_runs(concert) -> None:
    sql = "SELECT * FROM " + "(SELECT * FROM " * 9 + "(SELECT name FROM singer)" + ")" * 9
    assert links_from_sql(sql, concert.schema) == {"singer": ["name"]}
    assert sorted(execute_sql(concert, sql).rows) == [("Adele",), ("Edith",), ("Jacques",)]


def test_statement_kind_is_named_after_comments() -> None:
    assert "UPDATE statement" in (check_read_only("/* a */ -- b\n  update t set a = 1") or "")
    # The probe that took 33 s: an unterminated comment opener repeated, inside a VALUES list.
    probe = "VALUES ('" + "/*a" * 6_000 + "')"
    assert len(probe) < MAX_MODEL_SQL_CHARS
    assert "VALUES statement" in (check_read_only(probe) or "")


@pytest.mark.parametrize(
    "text",
    [
        "a b " * 250_000,  # words and spaces, no dot: the old regex rescanned every run
        "a" * 1_000_000,
        "{" * 200_000 + "singer.name",
        "```" * 300_000,
        "1.a " * 200_000,
    ],
    ids=["words", "one-word", "braces", "fences", "numbers"],
)
def test_huge_answers_parse_in_linear_time(text: str) -> None:
    links = parsing.parse_links(text)
    assert all(isinstance(t, str) and isinstance(c, list) for t, c in links.items())
    assert parsing.parse_sql(text) is None
    assert parsing.parse_verdict(text).sql is None


def test_dotted_pairs_keep_their_meaning() -> None:
    # The table is the run of words before the dot (as the regex this scanner replaced read it).
    text = "Use singer.name, concert.year; Player Attributes.id, 1.5, a.b.c " + "x " * 100_000 + ", stadium.capacity"
    assert parsing.parse_links(text) == {
        "Use singer": ["name"],
        "concert": ["year"],
        "Player Attributes": ["id"],
        "a": ["b"],
        "stadium": ["capacity"],
    }


@pytest.mark.parametrize(
    ("content", "text"),
    [
        (None, ""),
        ([{"type": "text", "text": None}, {"type": "text", "text": "SELECT 1"}, {"type": "image"}], "SELECT 1"),
        (["a", None, "b"], "ab"),
        ("bad \ud800 surrogate", "bad ? surrogate"),
        (42, "42"),
    ],
)
def test_answer_text_from_any_content(content: object, text: str) -> None:
    assert prompts.answer_text(content) == text


def test_links_from_json_escapes_are_valid_utf8() -> None:
    links = parsing.parse_links('{"singer\\ud800": ["name\\udfff", ["nested"], 3]}')
    assert links == {"singer?": ["name?", "3"]}
    for name in [*links, *links["singer?"]]:
        name.encode("utf-8")  # raises on a lone surrogate


def test_validate_links_with_many_repeated_pairs(concert) -> None:
    from route_graph.linking import validate_links

    raw = {"singer": ["name", "nme"] * 50_000, "nowhere": ["capacity"] * 50_000}
    links, dropped = validate_links(raw, concert.schema)
    assert links == {"stadium": ["capacity"], "singer": ["name"]}
    assert dropped == ["singer.nme", "nowhere"]


def test_long_flat_query_under_the_cap_runs(concert) -> None:
    sql = "SELECT name FROM singer WHERE age IN (" + ", ".join(str(i) for i in range(3_000)) + ")"
    assert len(sql) < MAX_MODEL_SQL_CHARS
    assert sorted(execute_sql(concert, sql).rows) == [("Adele",), ("Edith",), ("Jacques",)]
