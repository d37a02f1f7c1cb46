"""A database as the pipeline needs it: an engine, its sqlglot dialect, its schema, sample rows.

Built on SQLAlchemy (which LangChain's ``SQLDatabase`` wraps anyway), so langchain-community is
an optional interop path, never a dependency. Views are read as tables (columns, no keys).
``include_tables``/``ignore_tables`` narrow what the model sees, and ``schema=`` (PostgreSQL,
DuckDB) reads one non-default schema (``sql.search_path``). Opening files and URLs read-only is
``sql.opening``; rendering the schema for prompts is ``route_graph.rendering``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import sqlalchemy
import sqlglot
from sqlglot.errors import SqlglotError

from route_graph.errors import DatabaseError
from route_graph.sql.dialects import dialect_named
from route_graph.sql.dialects.generic import SQLGLOT_NAMES
from route_graph.sql.execute import execute_sql
from route_graph.sql.introspect import (
    build_schema,
    dbapi_error,
    filter_tables,
    introspect_sqlalchemy,
    name_list,
)
from route_graph.sql.schema import Schema, quote_identifier
from route_graph.sql.search_path import (
    check_schema_exists,
    check_schema_name,
    pin_search_path,
)

__all__ = ["Database", "display_name", "sqlglot_dialect", "warn_unbounded_once"]

_SAMPLE_TIMEOUT_S = 10.0


class Database:
    """An engine plus what the prompts need from it: dialect, schema, sample rows.

    ``include_tables`` keeps only those tables/views (an allow-list: the model sees nothing else),
    ``ignore_tables`` drops some; names are compared case-insensitively and a name the database
    does not have is an error, not a silent no-op. ``schema`` (PostgreSQL, DuckDB) reads that
    schema instead of the default one and sets the engine's ``search_path`` to it (then the
    default schema), because the prompts show bare table names and model SQL must resolve them
    there; the engine is changed for every user of it (see docs/databases.md).
    """

    def __init__(
        self,
        engine: sqlalchemy.Engine,
        *,
        name: str | None = None,
        dialect: str | None = None,
        include_tables: Iterable[str] | None = None,
        ignore_tables: Iterable[str] | None = None,
        schema: str | None = None,
    ) -> None:
        self.engine = engine
        self.dialect = dialect or sqlglot_dialect(engine.dialect.name)
        self.name = name or display_name(engine.url)
        self.include_tables = name_list("include_tables", include_tables)
        self.ignore_tables = name_list("ignore_tables", ignore_tables)
        self.schema_name = check_schema_name(engine, schema)
        prepare = dialect_named(engine.dialect.name).prepare
        if prepare is not None:  # e.g. a connect timeout: a silent server must not hang the schema read
            prepare(engine)
        warn_unbounded_once(engine)
        if self.schema_name is not None:
            check_schema_exists(engine, self.schema_name, self.name)
            pin_search_path(engine, self.schema_name)
        self._samples: dict[str, tuple[int, list[str], list[tuple]]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = f", schema={self.schema_name!r}" if self.schema_name else ""
        return f"Database(name={self.name!r}, dialect={self.dialect!r}{where})"

    @cached_property
    def schema(self) -> Schema:
        """Tables and views, columns, primary and foreign keys; read on first use, then cached."""
        try:
            introspect = dialect_named(self.engine.dialect.name).introspect or introspect_sqlalchemy
            raw = introspect(self.engine, self.schema_name)
        except DatabaseError:
            raise
        except (sqlalchemy.exc.SQLAlchemyError, dbapi_error(self.engine), OSError) as exc:
            orig = getattr(exc, "orig", None) or exc
            hint = (
                f"{self.name} is not a readable database"
                if "not a database" in str(orig)
                else f"Cannot read the schema of {self.name}"
            )
            raise DatabaseError(f"{hint}: {orig}. Check the path or URL.") from exc
        where = f"the schema {self.schema_name!r} of {self.name}" if self.schema_name else self.name
        if not raw:
            if self.schema_name:
                raise DatabaseError(
                    f"The schema {self.schema_name!r} of {self.name} has no tables or views "
                    "(or none this user may read); pass the schema that holds them."
                )
            raise DatabaseError(
                f"The database {self.name} has no tables; check the path or URL "
                "(a new or empty file has none)."
            )
        raw = filter_tables(raw, self.include_tables, self.ignore_tables, where)
        return build_schema(raw)

    def sample_rows(self, table: str, n: int) -> tuple[list[str], list[tuple]]:
        """The first ``n`` rows of ``table`` (column names, rows), read through the guarded SQLer."""
        t = self.schema.table(table)
        if t is None:
            raise DatabaseError(
                f"No table {table!r} in {self.name}; tables are: "
                + ", ".join(x.name for x in self.schema.tables)
            )
        if n <= 0:
            return [c.name for c in t.columns], []
        with self._lock:
            cached = self._samples.get(t.name)
        if cached is not None and (cached[0] >= n or len(cached[2]) < cached[0]):
            return list(cached[1]), list(cached[2][:n])
        sql = f"SELECT * FROM {quote_identifier(t.name, self.dialect)} LIMIT {int(n)}"
        result = execute_sql(self, sql, timeout_s=_SAMPLE_TIMEOUT_S, max_rows=n)
        if not result.ok:
            raise DatabaseError(f"Cannot read sample rows from {t.name}: {result.error}")
        with self._lock:
            self._samples[t.name] = (n, list(result.columns), list(result.rows))
        return list(result.columns), list(result.rows)

    def render_schema(self, schema: Schema | None = None, *, sample_rows: int = 3, value_chars: int = 60) -> str:
        """CREATE TABLE statements with sample rows: ``rendering.render_ddl``, kept as a method for
        existing callers (benchmarks/backend_speed.py, user code); new code calls ``render_ddl``."""
        # The one rendering module sits above this layer: imported here, never with it.
        from route_graph.rendering import render_ddl

        return render_ddl(self, schema, sample_rows=sample_rows, value_chars=value_chars)


# --------------------------------------------------------------------------- engines without a timeout

# Weak, not id(): a new engine can reuse a collected one's id.
_WARNED_UNBOUNDED: weakref.WeakSet[sqlalchemy.Engine] = weakref.WeakSet()
_LOG = logging.getLogger("route_graph")


def warn_unbounded_once(engine: sqlalchemy.Engine) -> None:
    """Say once per engine that its queries cannot be stopped at the timeout (never a silent gap)."""
    if dialect_named(engine.dialect.name).bounded or engine in _WARNED_UNBOUNDED:
        return
    _WARNED_UNBOUNDED.add(engine)
    _LOG.warning(
        "route-graph cannot interrupt queries on %s: model SQL is checked read-only and rolled "
        "back, but a slow query runs on the server until it finishes (the timeout is only reported "
        "when it returns). Connect as a read-only user with a server-side limit (SQL Server: a "
        "Resource Governor or query governor cost limit); see "
        "docs/databases.md.",
        engine.dialect.name,
    )


# --------------------------------------------------------------------------- names


def sqlglot_dialect(sqlalchemy_name: str) -> str:
    """The sqlglot dialect for a SQLAlchemy dialect name; "" (sqlglot's generic one) when sqlglot has none."""
    dialect = dialect_named(sqlalchemy_name)
    name = SQLGLOT_NAMES.get(sqlalchemy_name, sqlalchemy_name) if dialect.sqlglot == "" else dialect.sqlglot
    try:
        sqlglot.Dialect.get_or_raise(name)
    except (ValueError, SqlglotError):
        return ""  # sqlglot's generic dialect
    return name


def display_name(url: sqlalchemy.URL) -> str:
    """A short name for messages: the file's stem, else the backend's name."""
    database = url.database or ""
    if database.startswith("file:"):
        database = database[5:].split("?", 1)[0]
    if database and database != ":memory:":
        return Path(database).stem or database
    return url.get_backend_name()

