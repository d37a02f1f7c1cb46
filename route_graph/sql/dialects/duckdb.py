"""DuckDB: the guard again on DuckDB's own parse, a rolled-back transaction, an interrupt at the deadline.

Files we open are read-only without external access (``sql.opening``); on any DuckDB engine (a
user's read-write one included) the statement is checked again on DuckDB's own parse, runs in a
transaction that is always rolled back, and is interrupted at the deadline. Connections never
print a progress bar (it would corrupt ``route-sql ask --json`` on stdout). duckdb-engine's
SQLAlchemy inspector needs pg_catalog details DuckDB lacks, so the schema is read from DuckDB's
own catalog.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import sqlalchemy
from sqlglot import exp

from route_graph.sql.dialects.base import Dialect, RawSchema
from route_graph.sql.fetch import Fetched, fetch_rows
from route_graph.sql.guard import FILE_LIKE_TABLE, is_denied_function
from route_graph.sql.pool import QueryTimeout, Rejected, checkout
from route_graph.sql.result import short_error

__all__ = ["DIALECT", "introspect", "quiet_duckdb", "run", "schema_names", "search_path_statement"]

_QUIET_KEY = "route_graph.quiet_duckdb"  # in a pooled connection's info: progress bar is off


def quiet_duckdb(dbapi_connection: Any, info: dict[Any, Any] | None = None) -> None:
    """Switch off DuckDB's progress bar on one connection: it prints to stdout on queries over
    ~2 s, which corrupts JSON output. Both settings are per connection (DuckDB refuses them as
    ``connect(config=...)`` options), so every connection needs this; ``info`` (a pooled
    connection's) remembers that it was done."""
    if info is not None and info.get(_QUIET_KEY):
        return
    dbapi_connection.execute("SET enable_progress_bar = false")
    dbapi_connection.execute("SET enable_progress_bar_print = false")
    if info is not None:
        info[_QUIET_KEY] = True


def run(engine: sqlalchemy.Engine, sql: str, deadline: float, max_rows: int) -> Fetched:
    pooled = checkout(engine, deadline)
    lock = threading.Lock()
    state = {"done": False, "fired": False}
    conn = pooled.driver_connection
    try:
        quiet_duckdb(conn, pooled.info)  # a no-op on our own engines; a user's engine needs it
    except Exception:
        pooled.close()
        raise

    def interrupt() -> None:
        with lock:
            if not state["done"]:
                state["fired"] = True
                conn.interrupt()

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), interrupt)
    timer.daemon = True
    cursor = pooled.cursor()
    try:
        reason = _duckdb_parser_check(cursor, sql)
        if reason is not None:
            raise Rejected(reason)
        try:
            cursor.execute("BEGIN TRANSACTION")  # so a write that slipped through is undone
        except Exception:  # already inside a transaction opened by the driver
            pass
        timer.start()
        try:
            cursor.execute(sql)
            fetched = fetch_rows(cursor, max_rows)
        except Exception as exc:
            if state["fired"]:
                raise QueryTimeout from exc
            if "read-only" in str(exc) or "Permission Error" in str(exc):
                raise Rejected(f"Refused by the read-only connection: {short_error(str(exc))}") from exc
            raise
        return fetched
    finally:
        with lock:
            state["done"] = True
            timer.cancel()
        try:
            pooled.rollback()
        except Exception:  # no transaction active
            pass
        cursor.close()
        pooled.close()


_DUCKDB_QUERY_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"}


def _duckdb_parser_check(cursor: Any, sql: str) -> str | None:
    """The guard again, on DuckDB's own parse of ``sql`` (``json_serialize_sql``; nothing runs).

    A user's engine may be read-write with external access on, and DuckDB cannot switch external
    access off for one query without switching it off for the user's whole database for good. So
    on DuckDB the statement is checked twice, by two independent parsers: sqlglot's tree
    (``check_read_only``) and DuckDB's, which resolves names exactly as execution will (quoted
    and mixed-case function names included). Exactly one SELECT, no denied function (files,
    profiling/logging, SQL strings), no table that is a file path. Fails closed.
    """
    try:
        cursor.execute("SELECT json_serialize_sql(?::VARCHAR)", (sql,))
        tree = json.loads(cursor.fetchone()[0])
    except Exception as exc:  # no json extension, or an odd driver: refuse rather than guess
        return f"Cannot check the query with DuckDB's parser ({short_error(str(exc), 200)}); it did not run."
    if tree.get("error"):
        detail = str(tree.get("error_message", ""))
        if "Only SELECT" in detail:
            return "Only a read-only SELECT query may run (DuckDB parsed another kind of statement)."
        return f"DuckDB cannot parse the query: {short_error(detail, 200)}"
    statements = tree.get("statements") or []
    if len(statements) != 1:
        return f"Found {len(statements)} statements; only a single read-only SELECT query may run."
    stack: list[Any] = [statements[0]]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if isinstance(kind, str) and kind.endswith("_NODE") and kind not in _DUCKDB_QUERY_NODES:
            return f"Only a read-only SELECT query may run (DuckDB parsed a {kind} inside it)."
        name = node.get("function_name")
        if isinstance(name, str) and is_denied_function(name):
            return f"The function {name.lower()}() is not allowed in queries."
        if node.get("type") == "BASE_TABLE":
            table = str(node.get("table_name", ""))
            if any(ch in table for ch in "/\\:") or FILE_LIKE_TABLE.search(table):
                return f"Reading files ({table!r}) is not allowed; query the database's tables."
        stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
    root = statements[0].get("node", {}) if isinstance(statements[0], dict) else {}
    if root.get("type") not in _DUCKDB_QUERY_NODES:
        return f"Only a read-only SELECT query may run (DuckDB parsed a {root.get('type', 'different')} statement)."
    return None


def introspect(engine: sqlalchemy.Engine, schema: str | None = None) -> RawSchema:
    # duckdb-engine's Inspector relies on pg_catalog details DuckDB lacks; read its own catalog.
    where = "WHERE database_name = current_database() AND schema_name = " + (
        "current_schema()" if schema is None else "'" + schema.replace("'", "''") + "'"
    )
    pooled = engine.raw_connection()
    try:
        cursor = pooled.cursor()
        cursor.execute(f"SELECT table_name FROM duckdb_tables() {where} ORDER BY table_oid")
        raw: RawSchema = {row[0]: ([], [], [], False) for row in cursor.fetchall()}
        cursor.execute(f"SELECT view_name FROM duckdb_views() {where} AND NOT internal ORDER BY view_oid")
        for (view,) in cursor.fetchall():
            raw.setdefault(view, ([], [], [], True))
        cursor.execute(
            f"SELECT table_name, column_name, data_type FROM duckdb_columns() {where} "
            "ORDER BY table_name, column_index"
        )
        for table, column, type_ in cursor.fetchall():
            if table in raw:
                raw[table][0].append((column, str(type_ or "")))
        cursor.execute(
            "SELECT table_name, constraint_type, constraint_column_names, referenced_table, "
            f"referenced_column_names FROM duckdb_constraints() {where} "
            "AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY') ORDER BY table_name, constraint_index"
        )
        for table, kind, cols, ref_table, ref_cols in cursor.fetchall():
            if table not in raw:
                continue
            if kind == "PRIMARY KEY":
                raw[table][1].extend(cols)
            else:
                raw[table][2].append((list(cols), ref_table, list(ref_cols or [])))
        cursor.close()
    finally:
        pooled.close()
    return raw


def search_path_statement(schema: str) -> str:
    """``schema`` first where bare names resolve, ``main`` after it (extensions installed there)."""
    quoted = exp.to_identifier(schema, quoted=True).sql(dialect="duckdb").replace("'", "''")
    return f"SET search_path = '{quoted},main'"


def schema_names(engine: sqlalchemy.Engine) -> list[str]:
    """The schemas of the current database (duckdb-engine's inspector lists other databases' too)."""
    with engine.connect() as conn:
        return [
            str(r)
            for r in conn.exec_driver_sql(
                "SELECT DISTINCT schema_name FROM duckdb_schemas() WHERE database_name = "
                "current_database() ORDER BY 1"
            ).scalars()
        ]


DIALECT = Dialect(
    names=("duckdb",),
    sqlglot="duckdb",
    run=run,
    interrupts=True,
    driver_hint="pip install 'route-graph[duckdb]'",
    introspect=introspect,
    search_path=search_path_statement,
    schema_names=schema_names,
)
