"""Schema text for prompts: both formats, the token budget, and what the budget must never drop."""

from __future__ import annotations

from pathlib import Path

import pytest

from route_graph import open_database
from route_graph.errors import ConfigError
from route_graph.graph.context import RouteConfig
from route_graph.rendering import (
    estimate_tokens,
    render_ddl,
    render_schema_text,
    stage_schema_text,
)

# A wide database: 12 tables of 15 columns with long text values, keys between neighbours.
WIDE_TABLES = 12


def _wide_script() -> str:
    parts = []
    for t in range(WIDE_TABLES):
        cols = ["id INTEGER PRIMARY KEY"] + [f"c{i} TEXT" for i in range(14)]
        if t:
            cols.append(f"t{t - 1}_id INTEGER REFERENCES t{t - 1}(id)")
        parts.append(f"CREATE TABLE t{t} ({', '.join(cols)});")
        values = ", ".join(["1"] + [f"'{'long value ' * 6}{t}-{i}'" for i in range(14)] + (["1"] if t else []))
        parts.append(f"INSERT INTO t{t} VALUES ({values});")
    return "\n".join(parts)


@pytest.fixture
def wide_db(make_db):
    return open_database(make_db(_wide_script(), "wide.sqlite"))


@pytest.fixture
def shop(shop_db_path: Path):
    return open_database(shop_db_path)


def test_compact_format_shows_types_keys_values_and_foreign_keys(shop):
    text = render_schema_text(shop, shop.schema, fmt="compact", sample_rows=2)
    lines = text.splitlines()
    assert len(lines) == len(shop.schema.tables) + 1  # one line per table + the foreign keys
    customers = next(line for line in lines if line.startswith("customers("))
    assert "id INTEGER PK" in customers and "name TEXT e.g. 'Ada', 'Grace'" in customers
    assert '"Join Date"' in customers  # names that need quoting are quoted
    assert "order_items.order_id = orders.order_id" in lines[-1]
    assert estimate_tokens(text) < estimate_tokens(render_schema_text(shop, shop.schema, fmt="ddl", sample_rows=2))


@pytest.mark.parametrize("fmt", ["ddl", "compact"])
@pytest.mark.parametrize("budget", [150, 300, 600, 1200])
def test_budget_is_never_exceeded(wide_db, fmt, budget):
    text = render_schema_text(wide_db, wide_db.schema, fmt=fmt, sample_rows=3, token_budget=budget)
    assert estimate_tokens(text) <= budget
    full = render_schema_text(wide_db, wide_db.schema, fmt=fmt, sample_rows=3)
    assert estimate_tokens(full) > budget  # the budget really had to act


@pytest.mark.parametrize("fmt", ["ddl", "compact"])
def test_budget_keeps_linked_columns_and_keys(wide_db, fmt):
    keep = {"t7": ["c3", "c9"], "t8": ["c1"]}
    text = render_schema_text(
        wide_db, wide_db.schema, fmt=fmt, sample_rows=3, token_budget=300, keep=keep
    )
    assert estimate_tokens(text) <= 300
    for table, cols in keep.items():
        assert table in text
        for col in cols:
            assert col in text.split(table, 1)[1], (table, col)
    assert "t6_id" in text.split("t7", 1)[1]  # t7's key to t6 stays
    assert "(prompt budget)" in text  # it says what it left out


def test_within_budget_the_text_is_unchanged(shop):
    full = render_schema_text(shop, shop.schema, fmt="ddl", sample_rows=3)
    assert render_schema_text(shop, shop.schema, fmt="ddl", sample_rows=3, token_budget=10_000) == full
    assert full == render_ddl(shop, shop.schema, sample_rows=3)  # ddl within budget is render_ddl's text


def test_sample_values_go_first(wide_db):
    full = render_schema_text(wide_db, wide_db.schema, fmt="ddl", sample_rows=3)
    budget = estimate_tokens(full) - 50
    text = render_schema_text(wide_db, wide_db.schema, fmt="ddl", sample_rows=3, token_budget=budget)
    assert text.count("CREATE TABLE") == WIDE_TABLES  # every table and column still there
    assert all(f"c{i} TEXT" in text for i in range(14))


def test_stage_schema_text_follows_the_config(shop):
    ddl = stage_schema_text(shop, RouteConfig())
    compact = stage_schema_text(shop, RouteConfig(schema_format="compact"))
    assert ddl.startswith("CREATE TABLE") and compact.startswith("customers(")
    reduced = stage_schema_text(shop, RouteConfig(schema_format="compact"), {"orders": ["total"]})
    assert reduced.startswith("orders(") and "customers" not in reduced


def test_bad_format_or_budget_is_a_config_error():
    with pytest.raises(ConfigError, match="schema_format"):
        RouteConfig(schema_format="yaml")
    with pytest.raises(ConfigError, match="schema_token_budget"):
        RouteConfig(schema_token_budget=-1)
