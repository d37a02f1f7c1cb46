"""Database layer: opening (paths, URLs, engines, SQLDatabase), errors, schema, restrict, rendering."""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path

import pytest
import sqlalchemy

from route_graph.errors import DatabaseError
from route_graph.rendering import render_ddl
from route_graph.sql.database import Database
from route_graph.sql.execute import execute_sql
from route_graph.sql.opening import open_database
from route_graph.sql.schema import Column, ForeignKey, Schema, Table, quote_identifier

# --------------------------------------------------------------------------- opening


def test_open_path_reads_schema_and_is_read_only(shop_db_path: Path) -> None:
    db = open_database(shop_db_path)
    assert isinstance(db, Database)
    assert (db.dialect, db.name) == ("sqlite", "shop")
    assert [t.name for t in db.schema.tables] == ["customers", "orders", "Products", "order_items"]
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA query_only").scalar() == 1
        with pytest.raises(sqlalchemy.exc.OperationalError, match="readonly|read-only"):
            conn.exec_driver_sql("PRAGMA query_only=OFF")
            conn.exec_driver_sql("DELETE FROM customers")


def test_open_accepts_str_url_engine_and_database(shop_db_path: Path) -> None:
    by_str = open_database(str(shop_db_path))
    by_url = open_database(f"sqlite:///{shop_db_path}")
    engine = sqlalchemy.create_engine(f"sqlite:///{shop_db_path}")
    by_engine = open_database(engine)
    assert by_engine.engine is engine
    assert by_str.schema == by_url.schema == by_engine.schema
    assert open_database(by_str) is by_str
    assert by_url.name == by_engine.name == "shop"


def test_open_path_with_url_special_characters(make_db) -> None:
    path = make_db("CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1);", name="my db #1?.sqlite")
    db = open_database(path)
    assert db.name == "my db #1?"
    assert db.sample_rows("t", 5) == (["a"], [(1,)])


def test_open_sqldatabase_duck_typed(shop_db_path: Path) -> None:
    class FakeSQLDatabase:  # what langchain_community.utilities.SQLDatabase looks like to us
        def __init__(self, engine: sqlalchemy.Engine) -> None:
            self._engine = engine

        def get_usable_table_names(self) -> list[str]:
            return ["customers", "orders"]

    db = open_database(FakeSQLDatabase(sqlalchemy.create_engine(f"sqlite:///{shop_db_path}")))
    assert [t.name for t in db.schema.tables] == ["customers", "orders"]


def test_open_real_langchain_sqldatabase(shop_db_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # langchain-community warns that it is being sunset
        utilities = pytest.importorskip(
            "langchain_community.utilities", reason="optional extra route-graph[community]"
        )
    engine = sqlalchemy.create_engine(f"sqlite:///{shop_db_path}")
    sql_db = utilities.SQLDatabase(engine, include_tables=["customers"])
    db = open_database(sql_db)
    assert db.engine is engine
    assert [t.name for t in db.schema.tables] == ["customers"]


def test_missing_file_error_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="No database file at .*sqlite:///path.db"):
        open_database(tmp_path / "nope.sqlite")
    # A sqlite:/// URL must not silently create an empty file either.
    with pytest.raises(DatabaseError, match="No database file"):
        open_database(f"sqlite:///{tmp_path / 'nope2.db'}")
    assert list(tmp_path.iterdir()) == []


def test_not_a_database_and_no_tables(tmp_path: Path) -> None:
    text = tmp_path / "notes.sqlite"
    text.write_text("hello, I am not a database\n" * 10)
    with pytest.raises(DatabaseError, match="not a database"):
        open_database(text)
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with pytest.raises(DatabaseError, match="no tables"):
        open_database(empty)
    conn = sqlite3.connect(tmp_path / "tableless.db")
    conn.execute("PRAGMA user_version = 3")  # a valid database file without tables
    conn.close()
    with pytest.raises(DatabaseError, match="no tables"):
        open_database(tmp_path / "tableless.db")
    with pytest.raises(DatabaseError, match="is a directory"):
        open_database(tmp_path)


def test_unsupported_url_and_missing_driver() -> None:
    with pytest.raises(DatabaseError, match="Unsupported or uninstalled"):
        open_database("nosuchdb://user@host/db")
    try:
        import pymysql  # noqa: F401
    except ImportError:
        with pytest.raises(DatabaseError, match="pip install pymysql"):
            open_database("mysql+pymysql://user@localhost/db")
    with pytest.raises(TypeError):
        open_database(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://me:s3cret@localhost:notaport/shop",  # port that is not a number
        "postgresql://[::1/shop",  # unbalanced IPv6 bracket
        "://nothing",
        "sqlite://?timeout=soon",  # query parameter the driver cannot use
    ],
)
def test_malformed_url_is_one_clear_line(url: str) -> None:
    with pytest.raises(DatabaseError) as caught:
        open_database(url)
    message = str(caught.value)
    assert "\n" not in message and "s3cret" not in message
    assert "database URL" in message and "dialect+driver://" in message  # what to write instead


@pytest.mark.parametrize(
    "template",
    [
        "sqlite:///file:{dir}/a.db?mode=ro&uri=true",
        "sqlite:///file:{dir}/b.db",  # file: without uri=true: sqlite3 would take it as a name
        "sqlite:///file:{dir}/c.db?uri=true",  # uri without mode=ro: sqlite3 would create it
        "sqlite:///file://{dir}/d.db?uri=true&mode=rwc",
        "sqlite:///{dir}/e.db?uri=true",
        "sqlite:///file:f.db?uri=true",  # relative to the working directory
        "sqlite:///g.db",
        "{dir}/h.db",
    ],
)
def test_missing_sqlite_file_is_never_created(
    template: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatabaseError, match="No database file at"):
        open_database(template.format(dir=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_sqlite_file_uri_opens_existing_file_read_only(shop_db_path: Path) -> None:
    db = open_database(f"sqlite:///file:{shop_db_path}?mode=rwc&uri=true")
    assert db.schema.table("customers") is not None
    with db.engine.connect() as conn, pytest.raises(sqlalchemy.exc.OperationalError):
        conn.exec_driver_sql("DELETE FROM customers")  # mode=rwc is not honoured: read-only
    db.engine.dispose()


def _wal_database(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (a INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()  # the last connection checkpoints and removes -wal and -shm
    return path


def test_reading_a_wal_file_leaves_no_side_files(tmp_path: Path) -> None:
    path = _wal_database(tmp_path / "wal.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wal.db"]
    db = open_database(path)
    assert execute_sql(db, "SELECT a FROM t").rows == [(1,)]
    db.engine.dispose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wal.db"]


def test_wal_file_being_written_shows_the_latest_commit(tmp_path: Path) -> None:
    path = _wal_database(tmp_path / "wal.db")
    writer = sqlite3.connect(path)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")  # the new row stays in the -wal file
        writer.execute("INSERT INTO t VALUES (2)")
        writer.commit()
        db = open_database(path)
        assert execute_sql(db, "SELECT a FROM t ORDER BY a").rows == [(1,), (2,)]
        db.engine.dispose()
    finally:
        writer.close()


# --------------------------------------------------------------------------- schema


def test_schema_keys_types_and_case_insensitive_lookup(shop_db_path: Path) -> None:
    schema = open_database(shop_db_path).schema
    products = schema.table("PRODUCTS")
    assert products is not None and products.name == "Products"
    assert products.column("productid") == Column("ProductID", "INTEGER", True)
    assert products.column("PRICE") == Column("price", "", False)  # no declared type
    items = schema.table("order_items")
    assert [c.name for c in items.columns if c.primary_key] == ["order_id", "product_id"]
    # The foreign key was written as products(productid): resolved to the real spelling.
    assert ForeignKey("product_id", "Products", "ProductID") in items.foreign_keys
    assert schema.table("nope") is None and items.column("nope") is None


def _shop_schema() -> Schema:
    return Schema(
        (
            Table("a", (Column("id", "INT", True), Column("x", "TEXT"), Column("a_parent", "INT")),
                  (ForeignKey("a_parent", "a", "id"),)),
            Table("B", (Column("Id", "INT", True), Column("a_id", "INT"), Column("y", "TEXT"),
                        Column("z", "TEXT")), (ForeignKey("a_id", "a", "id"),)),
            Table("c", (Column("k1", "INT", True), Column("k2", "INT", True), Column("b_id", "INT"),
                        Column("w", "INT")), (ForeignKey("b_id", "B", "Id"),)),
        )
    )


def test_restrict_keeps_order_keys_and_connecting_foreign_keys() -> None:
    schema = _shop_schema()
    sub = schema.restrict({"C": ["W"], "b": ["Y", "no_such_column"], "ghost": ["x"]})
    assert [t.name for t in sub.tables] == ["B", "c"]  # schema order, unknown table ignored
    b, c = sub.tables
    assert [col.name for col in b.columns] == ["Id", "y"]  # PK kept; a_id dropped (a not kept)
    assert b.foreign_keys == ()
    assert [col.name for col in c.columns] == ["k1", "k2", "b_id", "w"]  # PKs + connecting FK
    assert c.foreign_keys == (ForeignKey("b_id", "B", "Id"),)


def test_restrict_adds_both_ends_and_ignores_self_reference() -> None:
    sub = _shop_schema().restrict({"a": ["x"], "c": []})
    a, c = sub.tables
    assert [col.name for col in a.columns] == ["id", "x"]  # self-referencing a_parent not added
    assert a.foreign_keys == ()
    assert c.foreign_keys == ()  # B is not kept
    both = _shop_schema().restrict({"a": ["x"], "B": ["z"]})
    assert [col.name for col in both.table("b").columns] == ["Id", "a_id", "z"]
    assert both.table("b").foreign_keys == (ForeignKey("a_id", "a", "id"),)
    assert _shop_schema().restrict({}) == Schema(())


# --------------------------------------------------------------------------- rendering


def test_quote_identifier() -> None:
    assert quote_identifier("name") == "name"
    assert quote_identifier("FacID") == "FacID"
    assert quote_identifier("order") == '"order"'
    assert quote_identifier("Join Date") == '"Join Date"'
    assert quote_identifier('a"b') == '"a""b"'
    assert quote_identifier("FacID", "postgres") == '"FacID"'
    assert quote_identifier("odd col", "mysql") == "`odd col`"


def test_render_schema_golden(shop_db_path: Path) -> None:
    db = open_database(shop_db_path)
    text = render_ddl(db, sample_rows=2, value_chars=12)
    orders_block = (
        "CREATE TABLE orders (\n"
        "  order_id INTEGER,\n"
        "  customer_id INTEGER,\n"
        "  total REAL,\n"
        "  note TEXT,\n"
        '  "order" INTEGER,\n'
        "  PRIMARY KEY (order_id),\n"
        "  FOREIGN KEY (customer_id) REFERENCES customers(id)\n"
        ");\n"
        "/*\n"
        "2 example rows from table orders:\n"
        "order_id\tcustomer_id\ttotal\tnote\torder\n"
        "10\t1\t25.5\tfirst order\t1\n"
        "11\t1\t7.0\tNULL\t2\n"
        "*/"
    )
    assert orders_block in text
    assert '  "Join Date" TEXT,' in text
    assert "  price,\n" in text  # blank type: just the name
    assert "  PRIMARY KEY (order_id, product_id),\n" in text
    assert "  FOREIGN KEY (product_id) REFERENCES Products(ProductID)\n" in text
    assert text == render_ddl(db, sample_rows=2, value_chars=12)  # deterministic
    assert text.count("CREATE TABLE") == 4


def test_render_cuts_long_values_and_restricted_columns(shop_db_path: Path) -> None:
    db = open_database(shop_db_path)
    sub = db.schema.restrict({"orders": ["note"]})
    text = render_ddl(db, sub, sample_rows=4, value_chars=10)
    assert text.startswith("CREATE TABLE orders (\n  order_id INTEGER,\n  note TEXT,\n")
    assert "order_id\tnote\n" in text
    assert "12\txyyyyyyyyy…\n" in text  # cut to 10 characters + "…"
    assert "13\ttab and ne…\n" in text  # tabs/newlines never break the row layout
    assert "/*" not in render_ddl(db, sub, sample_rows=0)


def test_sample_rows_cached_and_validated(shop_db_path: Path) -> None:
    db = open_database(shop_db_path)
    cols, rows = db.sample_rows("CUSTOMERS", 2)
    assert cols == ["id", "name", "city", "Join Date"]
    assert rows == [(1, "Ada", "London", "2020-01-01"), (2, "Grace", None, "2021-02-03")]
    assert db.sample_rows("customers", 1) == (cols, rows[:1])
    assert len(db.sample_rows("customers", 10)[1]) == 3
    with pytest.raises(DatabaseError, match="No table 'ghost'"):
        db.sample_rows("ghost", 3)


def test_empty_table_render(make_db) -> None:
    db = open_database(make_db("CREATE TABLE e (a INTEGER PRIMARY KEY, b TEXT);"))
    assert render_ddl(db) == (
        "CREATE TABLE e (\n  a INTEGER,\n  b TEXT,\n  PRIMARY KEY (a)\n);\n/*\nTable e has no rows.\n*/"
    )


# --------------------------------------------------------------------------- real Spider files


@pytest.mark.parametrize("db_id", ["college_2", "hr_1", "sakila_1", "aircraft", "wine_1"])
def test_spider_databases_render(data_dir: Path, db_id: str) -> None:
    path = data_dir / "spider_train" / "database" / db_id / f"{db_id}.sqlite"
    if not path.exists():
        pytest.skip(f"{path} is not in this copy of the data")
    before = path.stat().st_mtime_ns
    db = open_database(path)
    text = render_ddl(db, sample_rows=3)
    assert text.count("CREATE TABLE") == len(db.schema.tables) > 0
    for table in db.schema.tables:
        assert f"CREATE TABLE {quote_identifier(table.name)} (" in text
        for fk in table.foreign_keys:  # every key resolves to a real table and column
            assert db.schema.table(fk.ref_table).column(fk.ref_column) is not None
    assert path.stat().st_mtime_ns == before


def test_spider_college_2_details(data_dir: Path) -> None:
    path = data_dir / "spider_train" / "database" / "college_2" / "college_2.sqlite"
    if not path.exists():
        pytest.skip(f"{path} is not in this copy of the data")
    db = open_database(path)
    advisor = db.schema.table("advisor")
    assert [c.name for c in advisor.columns] == ["s_ID", "i_ID"]
    assert ForeignKey("i_ID", "instructor", "ID") in advisor.foreign_keys
    sub = db.schema.restrict({"student": ["name"], "ADVISOR": ["i_id"], "instructor": ["name"]})
    assert [t.name for t in sub.tables] == ["instructor", "student", "advisor"]  # creation order
    assert len(sub.table("advisor").foreign_keys) == 2
    assert "3 example rows from table advisor:\ns_ID\ti_ID\n" in render_ddl(db, sub)


# --------------------------------------------------------------------------- views, allow-lists, schemas

VIEW_SQL = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city TEXT);
CREATE VIEW london_customers AS SELECT id, name FROM customers WHERE city = 'London';
CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), total REAL);
INSERT INTO customers VALUES (1, 'Ada', 'London'), (2, 'Grace', 'New York');
INSERT INTO orders VALUES (10, 1, 25.5);
"""


def test_sqlite_view_is_read_as_a_table(make_db) -> None:
    db = open_database(make_db(VIEW_SQL))
    assert [t.name for t in db.schema.tables] == ["customers", "london_customers", "orders"]
    view = db.schema.table("london_customers")
    assert view.is_view and not db.schema.table("customers").is_view
    assert [c.name for c in view.columns] == ["id", "name"]
    assert view.foreign_keys == () and not any(c.primary_key for c in view.columns)
    rendered = render_ddl(db)
    assert "CREATE TABLE london_customers (\n  id INTEGER,\n  name TEXT\n);" in rendered
    assert "1 example row from table london_customers:\nid\tname\n1\tAda" in rendered
    assert db.schema.restrict({"london_customers": ["name"]}).tables[0].is_view
    assert execute_sql(db, "SELECT name FROM london_customers").rows == [("Ada",)]


def test_include_and_ignore_tables(make_db) -> None:
    path = make_db(VIEW_SQL)
    only = open_database(path, include_tables=["ORDERS", "london_customers"])
    assert [t.name for t in only.schema.tables] == ["london_customers", "orders"]
    # A key to a table left out is not shown (the model cannot join to what it cannot see).
    assert only.schema.table("orders").foreign_keys == ()
    assert "customers (" not in render_ddl(only, sample_rows=0).replace("london_customers (", "")
    ignored = open_database(path, ignore_tables=["london_customers"])
    assert [t.name for t in ignored.schema.tables] == ["customers", "orders"]
    both = open_database(path, include_tables=["customers", "orders"], ignore_tables=["orders"])
    assert [t.name for t in both.schema.tables] == ["customers"]
    # On an open Database: a new one on the same engine, the old one unchanged.
    full = open_database(path)
    narrowed = open_database(full, include_tables=["orders"])
    assert narrowed is not full and narrowed.engine is full.engine
    assert len(full.schema.tables) == 3 and [t.name for t in narrowed.schema.tables] == ["orders"]


def test_unknown_include_or_ignore_names_are_named(make_db) -> None:
    path = make_db(VIEW_SQL)
    with pytest.raises(DatabaseError, match=r"include_tables names 'ordrs', 'nope', not a table or view of db") as info:
        open_database(path, include_tables=["orders", "ordrs", "nope"])
    assert "it has: customers, london_customers, orders" in str(info.value)
    with pytest.raises(DatabaseError, match="ignore_tables names 'x'"):
        open_database(path, ignore_tables=["x"])
    with pytest.raises(DatabaseError, match="leave no table"):
        open_database(path, include_tables=["orders"], ignore_tables=["orders"])
    with pytest.raises(TypeError, match="list of table names"):
        open_database(path, include_tables="orders")


def test_schema_is_refused_on_sqlite(make_db) -> None:
    with pytest.raises(DatabaseError, match="supported on PostgreSQL and DuckDB, not sqlite"):
        open_database(make_db(VIEW_SQL), schema="sales")


def test_build_route_graph_passes_database_options(make_db) -> None:
    from route_graph import build_route_graph
    from tests.fakes import ScriptedChatModel

    graph = build_route_graph(ScriptedChatModel(scripts={}), make_db(VIEW_SQL), include_tables=["orders"])
    assert graph is not None
    with pytest.raises(DatabaseError, match="include_tables names 'nope'"):
        build_route_graph(ScriptedChatModel(scripts={}), make_db(VIEW_SQL, name="b.sqlite"), include_tables=["nope"])


def test_langchain_sqldatabase_keeps_its_usable_tables(make_db) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        utilities = pytest.importorskip("langchain_community.utilities", reason="optional extra")
    engine = sqlalchemy.create_engine(f"sqlite:///{make_db(VIEW_SQL)}")
    no_views = open_database(utilities.SQLDatabase(engine, ignore_tables=["orders"]))
    assert [t.name for t in no_views.schema.tables] == ["customers"]
    # Options given to open_database win over the SQLDatabase's.
    mine = open_database(utilities.SQLDatabase(engine), include_tables=["orders"])
    assert [t.name for t in mine.schema.tables] == ["orders"]


DUCKDB_SALES_SQL = """
CREATE TABLE main.note (id INTEGER);
CREATE SCHEMA sales;
CREATE TABLE sales.customers (id INTEGER PRIMARY KEY, name VARCHAR);
CREATE TABLE sales.orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES sales.customers(id), total DOUBLE);
CREATE VIEW sales.big_orders AS SELECT id, total FROM sales.orders WHERE total > 50;
INSERT INTO sales.customers VALUES (1, 'Ada'), (2, 'Grace');
INSERT INTO sales.orders VALUES (10, 1, 25.5), (11, 2, 100.0);
"""


@pytest.fixture
def sales_duckdb(tmp_path: Path) -> Path:
    duckdb = pytest.importorskip("duckdb", reason="optional extra route-graph[duckdb]")
    path = tmp_path / "shop.duckdb"
    conn = duckdb.connect(str(path))
    conn.execute(DUCKDB_SALES_SQL)
    conn.close()
    return path


def test_duckdb_schema_and_view(sales_duckdb: Path) -> None:
    default = open_database(sales_duckdb)
    assert [t.name for t in default.schema.tables] == ["note"]
    db = open_database(sales_duckdb, schema="sales")
    assert db.schema_name == "sales" and "schema='sales'" in repr(db)
    assert [t.name for t in db.schema.tables] == ["customers", "orders", "big_orders"]
    assert db.schema.table("big_orders").is_view
    assert db.schema.table("orders").foreign_keys == (ForeignKey("customer_id", "customers", "id"),)
    # Bare names in model SQL reach the schema (search_path), through the guarded executor.
    result = execute_sql(db, "SELECT c.name, b.total FROM big_orders b JOIN orders o ON o.id = b.id "
                             "JOIN customers c ON c.id = o.customer_id")
    assert result.ok, result.error
    assert result.rows == [("Grace", 100.0)]
    assert "2 example rows from table customers" in render_ddl(db)
    assert "1 example row from table big_orders" in render_ddl(db)
    # Still read-only.
    assert not execute_sql(db, "DELETE FROM orders").ok
    only = open_database(sales_duckdb, schema="sales", include_tables=["big_orders"])
    assert [t.name for t in only.schema.tables] == ["big_orders"]


def test_duckdb_unknown_schema_lists_the_schemas(sales_duckdb: Path) -> None:
    engine = sqlalchemy.create_engine(f"duckdb:///{sales_duckdb}", connect_args={"read_only": True})
    with pytest.raises(DatabaseError, match=r"No schema 'sale' in shop; its schemas are: main, sales"):
        open_database(engine, schema="sale")
    # The user's engine is left as it was (DuckDB would refuse every later query otherwise).
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM note").scalar() == 0
    engine.dispose()


def test_engine_pinned_to_one_schema(sales_duckdb: Path) -> None:
    engine = sqlalchemy.create_engine(f"duckdb:///{sales_duckdb}", connect_args={"read_only": True})
    db = open_database(engine, schema="sales")
    assert execute_sql(db, "SELECT count(*) FROM orders").rows == [(2,)]
    assert open_database(engine, schema="sales").schema == db.schema  # same schema: fine
    with pytest.raises(DatabaseError, match="already reads the schema 'sales'"):
        open_database(engine, schema="main")
    engine.dispose()


def test_engines_without_a_timeout_are_named_once(caplog: pytest.LogCaptureFixture, make_db) -> None:
    """SQL Server queries cannot be interrupted (route_graph.sql.dialects.generic): say so, never silently.
    MySQL/MariaDB have a runner with a server-side limit (tests/test_mysql.py): no warning."""
    from types import SimpleNamespace

    from route_graph.sql import database

    class FakeEngine:  # what the warning reads of an engine (no driver is needed)
        def __init__(self, name: str) -> None:
            self.dialect = SimpleNamespace(name=name)

    mssql, mysql = FakeEngine("mssql"), FakeEngine("mysql")
    with caplog.at_level("WARNING", logger="route_graph"):
        database.warn_unbounded_once(mssql)  # type: ignore[arg-type]
        database.warn_unbounded_once(mssql)  # type: ignore[arg-type]
        database.warn_unbounded_once(mysql)  # type: ignore[arg-type]
        open_database(make_db(VIEW_SQL))  # SQLite: bounded, no warning
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    assert "cannot interrupt queries on mssql" in messages[0] and "docs/databases.md" in messages[0]
