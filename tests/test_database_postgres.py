"""Schemas, views and allow-lists on a live PostgreSQL 15 (``postgres_server`` in conftest.py).

A database ``shop`` has its tables in schema ``sales`` (a table, a view and a materialized view)
and a decoy ``customers`` table in ``public``, so a query that reached the wrong schema shows.
Measured with both engine kinds (the driver's transactions, ``AUTOCOMMIT``), as the superuser
(the executor lowers the role: the search path must survive that) and as the read-only role
docs/databases.md recommends (the executor sets no path of its own then).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import sqlalchemy

from route_graph import build_route_graph
from route_graph.errors import DatabaseError
from route_graph.rendering import render_ddl
from route_graph.sql.database import Database
from route_graph.sql.execute import execute_sql
from route_graph.sql.opening import open_database
from tests.fakes import ScriptedChatModel

ROOT = Path(__file__).resolve().parents[1]

SHOP_PG_SQL = """
CREATE SCHEMA sales;
CREATE TABLE sales.customers (id INTEGER PRIMARY KEY, name TEXT, country TEXT);
CREATE TABLE sales.orders (
  order_id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES sales.customers, total NUMERIC
);
CREATE VIEW sales.big_orders AS SELECT order_id, total FROM sales.orders WHERE total > 50;
CREATE MATERIALIZED VIEW sales.customer_totals AS
  SELECT customer_id, sum(total) AS total FROM sales.orders GROUP BY customer_id;
INSERT INTO sales.customers VALUES (1, 'Ada', 'France'), (2, 'Grace', 'USA'), (3, 'Edith', 'France');
INSERT INTO sales.orders VALUES (10, 1, 25.5), (11, 2, 100), (12, 3, 75);
REFRESH MATERIALIZED VIEW sales.customer_totals;
CREATE TABLE public.customers (id INTEGER, name TEXT, country TEXT);
INSERT INTO public.customers VALUES (99, 'decoy in public', 'France');
"""

ENGINE_KINDS = ["default", "autocommit"]
SALES_TABLES = {"customers", "orders", "big_orders", "customer_totals"}


@pytest.fixture(scope="module")
def shop_url(postgres_server) -> str:
    return postgres_server.create_database("shop", SHOP_PG_SQL)


@pytest.fixture(params=ENGINE_KINDS)
def engine(request, shop_url: str):
    kwargs = {"isolation_level": "AUTOCOMMIT"} if request.param == "autocommit" else {}
    engine = sqlalchemy.create_engine(shop_url, **kwargs)
    yield engine
    engine.dispose()


def test_default_schema_is_public(shop_url: str) -> None:
    db = open_database(shop_url)
    assert [t.name for t in db.schema.tables] == ["customers"]
    assert execute_sql(db, "SELECT name FROM customers").rows == [("decoy in public",)]


def test_schema_with_views_reached_by_bare_names(engine: sqlalchemy.Engine) -> None:
    db = open_database(engine, schema="sales")
    assert {t.name for t in db.schema.tables} == SALES_TABLES
    assert db.schema.table("big_orders").is_view and db.schema.table("customer_totals").is_view
    assert not db.schema.table("orders").is_view
    assert [fk.ref_table for fk in db.schema.table("orders").foreign_keys] == ["customers"]
    # Model SQL names tables bare; they resolve in sales (not public's decoy), every time: the
    # path is set per pooled connection and survives the executor's rollback and role change.
    for _ in range(3):
        result = execute_sql(
            db,
            "SELECT c.name FROM customers c JOIN big_orders b ON b.order_id IN "
            "(SELECT order_id FROM orders o WHERE o.customer_id = c.id) ORDER BY c.name",
        )
        assert result.ok, result.error
        assert result.rows == [("Edith",), ("Grace",)]
    totals = execute_sql(db, "SELECT customer_id, total FROM customer_totals ORDER BY customer_id")
    assert [(r[0], float(r[1])) for r in totals.rows] == [(1, 25.5), (2, 100.0), (3, 75.0)]
    rendered = render_ddl(db)
    assert "CREATE TABLE big_orders (" in rendered and "decoy" not in rendered
    assert "2 example rows from table big_orders" in rendered
    # Still read-only, and nothing changed.
    assert not execute_sql(db, "DELETE FROM orders").ok
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM sales.orders").scalar() == 3


def test_include_and_ignore_tables_in_a_schema(shop_url: str) -> None:
    db = open_database(shop_url, schema="sales", include_tables=["ORDERS", "big_orders"])
    assert {t.name for t in db.schema.tables} == {"orders", "big_orders"}
    assert db.schema.table("orders").foreign_keys == ()  # customers is left out
    ignored = open_database(shop_url, schema="sales", ignore_tables=["customer_totals"])
    assert {t.name for t in ignored.schema.tables} == SALES_TABLES - {"customer_totals"}
    with pytest.raises(DatabaseError, match=r"include_tables names 'orderz', not a table or view of the schema 'sales' of shop"):
        open_database(shop_url, schema="sales", include_tables=["orders", "orderz"])


def test_unknown_schema_is_named_and_the_engine_untouched(shop_url: str) -> None:
    engine = sqlalchemy.create_engine(shop_url)
    with pytest.raises(DatabaseError, match=r"No schema 'Sales' in shop; its schemas are: public, sales"):
        open_database(engine, schema="Sales")
    assert open_database(engine).schema.table("customers") is not None  # still the default path
    engine.dispose()


def test_langchain_sqldatabase_keeps_schema_and_include_tables(engine: sqlalchemy.Engine) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        utilities = pytest.importorskip("langchain_community.utilities", reason="optional extra")
    sql_db = utilities.SQLDatabase(engine, schema="sales", include_tables=["customers", "orders"])
    db = open_database(sql_db)
    assert db.schema_name == "sales"
    assert {t.name for t in db.schema.tables} == {"customers", "orders"}
    result = execute_sql(db, "SELECT count(*) FROM customers")
    assert result.rows == [(3,)]  # sales.customers, not public's one-row decoy


def _role_block() -> str:
    text = (ROOT / "docs" / "databases.md").read_text()
    match = re.search(r"<!-- read-only-role[^>]*-->\s*```sql\n(.*?)```", text, re.DOTALL)
    assert match, "docs/databases.md lost its read-only role block"
    return match.group(1)


def test_documented_read_only_role_reads_the_schema(postgres_server, shop_url: str) -> None:
    import psycopg

    with psycopg.connect(postgres_server.psql_conninfo("shop"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'route_reader'").fetchone() is None:
            conn.execute(_role_block())
    url = shop_url.replace("postgres@", "route_reader@", 1)
    db = open_database(url, schema="sales")
    assert {t.name for t in db.schema.tables} == SALES_TABLES
    result = execute_sql(db, "SELECT name FROM customers WHERE country = 'France' ORDER BY name")
    assert result.ok, result.error
    assert result.rows == [("Ada",), ("Edith",)]
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT current_setting('is_superuser')").scalar() == "off"
        assert conn.exec_driver_sql("SHOW default_transaction_read_only").scalar() == "on"
        with pytest.raises(sqlalchemy.exc.DBAPIError, match="read-only transaction"):
            conn.exec_driver_sql("DELETE FROM sales.orders")
    db.engine.dispose()


def fence(sql: str) -> str:
    return f"```sql\n{sql}\n```"


SQL_FRENCH = "SELECT name FROM customers WHERE country = 'France'"


def test_graph_answers_a_question_on_a_table_in_schema_sales(shop_url: str) -> None:
    llm = ScriptedChatModel(
        scripts={
            "sl": ['{"customers": ["name", "country"]}'],
            "ts": [fence("SELECT name FROM customers"), fence(SQL_FRENCH)],
        }
    )
    graph = build_route_graph(llm, shop_url, schema="sales", include_tables=["customers", "orders"])
    out = graph.invoke({"question": "Which customers are from France?"})
    assert all(not lines for lines in llm.scripts.values()), llm.scripts
    assert out["sql"] == SQL_FRENCH
    assert out["result"]["ok"], out["result"]
    assert sorted(r[0] for r in out["result"]["rows"]) == ["Ada", "Edith"]  # not public's decoy
    prompts = "\n".join(prompt for _, prompt in llm.calls)
    assert "CREATE TABLE customers (" in prompts and "CREATE TABLE orders (" in prompts
    assert "big_orders" not in prompts and "decoy" not in prompts and "sales." not in prompts


def test_database_constructor_pins_the_schema_before_any_query(shop_url: str) -> None:
    engine = sqlalchemy.create_engine(shop_url)
    db = Database(engine, schema="sales")
    assert execute_sql(db, "SELECT count(*) FROM customers").rows == [(3,)]
    engine.dispose()
