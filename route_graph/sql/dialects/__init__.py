"""Dialects: how model SQL runs read-only and time-limited on each kind of database.

The guard (``sql.guard``) decides *whether* a statement may run, the same for every database. A
dialect decides *how* it runs: which transaction keeps it read-only, what stops it at the
deadline, how its rows are streamed, and what the connection itself refuses. Each file here
declares one ``Dialect`` (``base.py``) named ``DIALECT``; ``execute_sql`` picks it by the engine's
SQLAlchemy dialect name and driver (``dialect_for``), anything unknown runs through ``generic``.

Adding a dialect, say SQL Server (``mssql``):

1. Write ``sql/dialects/mssql.py`` with a runner, ``run(engine, sql, deadline, max_rows)``:
   check out a connection with ``pool.checkout(engine, deadline)`` (it honours the deadline while
   waiting for the pool), open a read-only transaction the server enforces (a read-only login or
   snapshot transaction), set the server's own statement time limit from ``deadline``, execute,
   read rows with ``fetch.fetch_rows(cursor, max_rows)`` (it caps cells and bytes), and always roll
   back and give the connection back (``pool.close_quietly``). Translate the driver's errors:
   raise ``pool.QueryTimeout`` for a statement the limit stopped, ``pool.Rejected`` for one the
   server refused as a write or a privilege; let other driver errors through (they become
   ``ExecutionResult.error``). ``postgres.py`` and ``mysql.py`` are full examples.
2. Declare it: ``DIALECT = Dialect(names=("mssql",), sqlglot="tsql", run=run, interrupts=False,
   driver_hint="pip install pyodbc")``. ``interrupts=True`` only if ``run`` itself stops a query
   at the deadline (SQLite's progress handler, DuckDB's interrupt); otherwise a late result still
   counts as a timeout. Give ``introspect``, ``search_path`` or ``schema_names`` only where
   SQLAlchemy's inspector falls short, and ``prepare`` for per-engine setup (a connect timeout).
3. Add it to ``DIALECTS`` below and remove its entries from ``generic.SQLGLOT_NAMES`` /
   ``generic.DRIVER_HINTS``. Opening the database then stops warning that queries cannot be
   interrupted (``bounded``).
4. Test it like ``tests/test_postgres.py``: the hostile-SQL corpus (``tests/hostile_sql.py``) must
   be refused or harmless, a slow query must stop within timeout + 1 s, a write that slips past
   the guard must be rolled back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from route_graph.sql.dialects import duckdb, generic, mysql, postgres, sqlite
from route_graph.sql.dialects.base import Dialect

if TYPE_CHECKING:
    import sqlalchemy

__all__ = ["DIALECTS", "GENERIC", "Dialect", "dialect_for", "dialect_named"]

#: Every dialect with its own runner, looked up by SQLAlchemy dialect name.
DIALECTS: tuple[Dialect, ...] = (sqlite.DIALECT, duckdb.DIALECT, postgres.DIALECT, mysql.DIALECT)
#: Any other database: a rolled-back transaction, no interrupt.
GENERIC: Dialect = generic.DIALECT
_BY_NAME = {name: dialect for dialect in DIALECTS for name in dialect.names}


def dialect_named(sqlalchemy_name: str) -> Dialect:
    """The dialect for a SQLAlchemy dialect name (``engine.dialect.name``); ``GENERIC`` if none."""
    return _BY_NAME.get(sqlalchemy_name, GENERIC)


def dialect_for(engine: sqlalchemy.Engine) -> Dialect:
    """The dialect that runs SQL on ``engine``: by name, and only with a driver its runner knows."""
    dialect = dialect_named(engine.dialect.name)
    if dialect.drivers and engine.dialect.driver not in dialect.drivers:
        return GENERIC  # e.g. aiosqlite or sqlcipher: no authorizer API to rely on
    return dialect
