"""Schema links from model text and from SQL (sqlglot), merging, difficulty, precision/recall."""

from __future__ import annotations

from pathlib import Path

import pytest

from route_graph.linking import (
    bridge_tables,
    expand_links,
    is_hard,
    links_from_sql,
    links_json_schema,
    merge_links,
    named_tables,
    score_links,
    sql_table_count,
    validate_links,
    with_join_keys,
)
from route_graph.sql.opening import open_database
from tests.fakes import make_concert_db


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory):
    path = make_concert_db(tmp_path_factory.mktemp("db") / "concert.sqlite")
    return open_database(path).schema


def test_validate_links_drops_and_reports_hallucinations(schema) -> None:
    links, dropped = validate_links(
        {"Singer": ["NAME", "nationality", "*"], "artists": ["x"], "concert": ["year"]}, schema
    )
    assert links == {"singer": ["name"], "concert": ["year"]}
    assert dropped == ["Singer.nationality", "artists"]


def test_validate_links_moves_column_to_its_unique_table(schema) -> None:
    links, dropped = validate_links({"singer": ["capacity"], "ghost": ["concert_name"]}, schema)
    assert links == {"stadium": ["capacity"], "singer": [], "concert": ["concert_name"]}
    assert dropped == ["ghost"]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT name FROM singer WHERE age > 30", {"singer": ["name", "age"]}),
        (  # aliases
            "SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id",
            {"singer": ["singer_id", "name"], "singer_in_concert": ["singer_id"]},
        ),
        (  # self-join
            "SELECT a.name FROM singer a JOIN singer b ON a.country = b.country WHERE b.age > 40",
            {"singer": ["name", "country", "age"]},
        ),
        (  # subquery with its own scope; unqualified column resolved by schema
            "SELECT concert_name FROM concert WHERE stadium_id IN (SELECT stadium_id FROM stadium WHERE capacity > 85000)",
            {"stadium": ["stadium_id", "capacity"], "concert": ["concert_name", "stadium_id"]},
        ),
        (  # CTE, count(*), output alias in ORDER BY is not a column
            "WITH s AS (SELECT country, count(*) AS n FROM singer GROUP BY country) SELECT country FROM s ORDER BY n",
            {"singer": ["country"]},
        ),
        ("SELECT nme FROM singer", {"singer": []}),  # hallucinated column ignored, table kept
        ("SELECT COUNT(*) FROM Singer", {"singer": []}),  # case-insensitive
    ],
)
def test_links_from_sql(schema, sql: str, expected: dict) -> None:
    assert links_from_sql(sql, schema) == expected


def test_links_from_unparseable_sql_is_none(schema) -> None:
    assert links_from_sql("SELEC name FRM singer WHERE (", schema) is None


def test_merge_keeps_schema_order(schema) -> None:
    merged = merge_links(schema, {"concert": ["year"]}, None, {"stadium": ["name"], "concert": ["concert_id"]})
    assert list(merged) == ["stadium", "concert"]
    assert merged["concert"] == ["concert_id", "year"]


def test_difficulty(schema) -> None:
    three = (
        "SELECT T1.name FROM singer T1 JOIN singer_in_concert T2 ON T1.singer_id = T2.singer_id "
        "JOIN concert T3 ON T2.concert_id = T3.concert_id"
    )
    assert sql_table_count(three, schema) == 3
    assert is_hard(three, schema, threshold=2)
    assert not is_hard("SELECT name FROM singer", schema, threshold=2)
    assert is_hard("SELECT 1", schema, threshold=2)  # no table detected counts as hard
    assert is_hard("not sql at all (", schema, threshold=2)


def test_json_schema_enumerates_real_names(schema) -> None:
    js = links_json_schema(schema)
    assert set(js["properties"]) == {"stadium", "singer", "concert", "singer_in_concert"}
    assert js["properties"]["singer"]["items"]["enum"] == ["singer_id", "name", "country", "age"]


def test_score_links() -> None:
    gold = {"singer": ["name", "age"], "concert": ["year"]}
    pred = {"singer": ["name"], "stadium": ["name"]}
    s = score_links(pred, gold)
    assert (s.table_precision, s.table_recall) == (0.5, 0.5)
    assert (s.column_precision, s.column_recall) == (0.5, pytest.approx(1 / 3))
    assert not s.strict_recall
    assert score_links({"Singer": ["NAME", "age", "x"], "concert": ["year"]}, gold).strict_recall


def test_placeholder_shaped_table_names_are_read_as_the_table(schema) -> None:
    # Small models echo a prompt placeholder's shape: {"table_singer": [...]}.
    links, dropped = validate_links({"table_singer": ["name"], "table_nothing": ["zzz"]}, schema)
    assert links == {"singer": ["name"]}
    assert dropped == ["table_nothing"]


def test_named_tables_match_plurals_and_joined_words(tmp_path: Path) -> None:
    db = open_database(
        make_concert_db(tmp_path / "c.sqlite", ["CREATE TABLE lapTimes (id INTEGER)", "CREATE TABLE Has_Amenity (id INTEGER)"])
    )
    assert named_tables(db.schema, "Which singers played concerts?") == ["singer", "concert"]
    assert "lapTimes" in named_tables(db.schema, "the driver with the longest lap time")
    assert "lapTimes" in named_tables(db.schema, "drivers who had laptimes under 90")
    assert "Has_Amenity" not in named_tables(db.schema, "dorms with amenities")  # 'has' is not named
    assert named_tables(db.schema, "How old is the oldest person?") == []


def test_bridge_tables_join_two_kept_tables(schema) -> None:
    assert bridge_tables(schema, ["singer", "concert"]) == ["singer_in_concert"]
    assert bridge_tables(schema, ["singer"]) == []  # nothing to bridge to
    # concert references stadium and is referenced by singer_in_concert
    assert bridge_tables(schema, ["stadium", "singer_in_concert"]) == ["concert"]


def test_with_join_keys_adds_both_ends_of_keys_between_linked_tables(schema) -> None:
    links = with_join_keys(schema, {"concert": ["concert_name"], "stadium": ["name"]})
    assert links == {"stadium": ["stadium_id", "name"], "concert": ["concert_name", "stadium_id"]}
    assert with_join_keys(schema, {"singer": ["name"]}) == {"singer": ["name"]}  # one table: unchanged
    # stadium and singer are not joined by a key: nothing added
    assert with_join_keys(schema, {"singer": ["name"], "stadium": ["name"]}) == {"stadium": ["name"], "singer": ["name"]}


def test_expand_links_is_recall_first(schema) -> None:
    links, added = expand_links(schema, {"singer": ["name"]}, "Which singers gave a concert during 2014?", all_columns=True)
    assert list(links) == ["singer", "concert", "singer_in_concert"]  # schema order
    assert links["singer"] == ["singer_id", "name", "country", "age"]
    assert added.named == ["concert"] and added.bridges == ["singer_in_concert"] and added.all_columns
    # Over budget: the named columns stay as they are, the added tables bring no columns of their own
    # (Schema.restrict adds their keys when the prompt is rendered).
    links, _ = expand_links(schema, {"singer": ["name"]}, "Which singers gave a concert?", all_columns=False)
    assert links == {"singer": ["name"], "concert": [], "singer_in_concert": []}
    # No links means the full schema: nothing to expand.
    assert expand_links(schema, {}, "singers in concerts", all_columns=True)[0] == {}
