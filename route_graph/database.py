"""The database layer: open read-only, introspect the schema once, render it for prompts.

Built on SQLAlchemy (which LangChain's ``SQLDatabase`` wraps anyway), so langchain-community is
an optional interop path, never a dependency. SQLite and DuckDB files we open ourselves are
read-only at the connection level; model SQL additionally goes through ``execution.execute_sql``.

Views are read as tables (columns, no keys). ``include_tables``/``ignore_tables`` narrow what the
model sees, and ``schema=`` (PostgreSQL, DuckDB) reads one non-default schema: its connections get
``search_path`` set to it, so the unqualified names the prompts show are the names SQL reaches.
See docs/databases.md.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import warnings
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import sqlalchemy
import sqlglot
from sqlalchemy.pool import QueuePool
from sqlglot import exp
from sqlglot.errors import SqlglotError

from route_graph.errors import DatabaseError
from route_graph.execution import bound_connect_timeout, execute_sql, format_value, quiet_duckdb

if TYPE_CHECKING:  # optional extra; duck-typed at run time
    from langchain_community.utilities import SQLDatabase

__all__ = [
    "Column",
    "Database",
    "ForeignKey",
    "Schema",
    "Table",
    "open_database",
    "quote_identifier",
]

_DUCKDB_SUFFIXES = {".duckdb", ".ddb"}
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SAMPLE_TIMEOUT_S = 10.0
_HINT_URL = "pass a path to an existing SQLite file, or a SQLAlchemy URL such as sqlite:///path.db"
_HINT_URL_FORM = (
    "write it as dialect+driver://user:password@host:port/database "
    "(e.g. postgresql://me@localhost:5432/shop or sqlite:///path/to/file.db)"
)
_PASSWORD_IN_URL = re.compile(r"(://[^/:@\s]*:)[^@/\s]*@")
# SQLAlchemy dialect name -> sqlglot dialect name (where they differ).
_SQLGLOT_DIALECTS = {"postgresql": "postgres", "mariadb": "mysql", "mssql": "tsql"}
# Missing driver -> what to install.
_DRIVER_HINTS = {
    "duckdb": "pip install 'route-graph[duckdb]'",
    "postgresql": "pip install psycopg2-binary",
    "mysql": "pip install pymysql",
    "mariadb": "pip install pymysql",
    "mssql": "pip install pyodbc",
}


@dataclass(frozen=True)
class Column:
    """One column; ``type`` is the declared type as text ("" when the database declares none)."""

    name: str
    type: str
    primary_key: bool = False


@dataclass(frozen=True)
class ForeignKey:
    """``column`` of the owning table references ``ref_table.ref_column`` (one pair per key part)."""

    column: str
    ref_table: str
    ref_column: str


@dataclass(frozen=True)
class Table:
    """A table (or a view: ``is_view``, no keys) with its columns in database order.

    Prompts render a view exactly like a table: the model only needs to know what it can read.
    """

    name: str
    columns: tuple[Column, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    is_view: bool = False

    def column(self, name: str) -> Column | None:
        """The column called ``name``, compared case-insensitively (SQL identifiers are)."""
        wanted = name.lower()
        return next((c for c in self.columns if c.name.lower() == wanted), None)


@dataclass(frozen=True)
class Schema:
    """The tables of a database (or of a schema-linked subset of it), in schema order.

    Schema order is creation order for SQLite and DuckDB (as in Spider's ``tables.json``) and
    the inspector's order elsewhere.
    """

    tables: tuple[Table, ...]

    def table(self, name: str) -> Table | None:
        """The table called ``name``, compared case-insensitively."""
        wanted = name.lower()
        return next((t for t in self.tables if t.name.lower() == wanted), None)

    def restrict(self, links: dict[str, list[str]]) -> Schema:
        """The sub-schema of the linked tables/columns, in schema order, keys kept connected.

        Each kept table keeps its primary-key columns and the foreign-key columns that connect it
        to another kept table (both ends); a foreign key is kept only when both of its tables
        are. A self-referencing key is kept only when both its columns are linked anyway, so it
        never adds columns. Unknown names are ignored; names may be in any case.
        """
        wanted: dict[str, set[str]] = {}
        for table_name, columns in links.items():
            wanted.setdefault(str(table_name).lower(), set()).update(
                str(c).lower() for c in (columns or ())
            )
        kept = [t for t in self.tables if t.name.lower() in wanted]
        kept_names = {t.name.lower() for t in kept}
        keep_cols = {
            t.name.lower(): wanted[t.name.lower()] | {c.name.lower() for c in t.columns if c.primary_key}
            for t in kept
        }
        for t in kept:
            for fk in t.foreign_keys:
                ref = fk.ref_table.lower()
                if ref in kept_names and ref != t.name.lower():
                    keep_cols[t.name.lower()].add(fk.column.lower())
                    keep_cols[ref].add(fk.ref_column.lower())
        out = []
        for t in kept:
            cols = keep_cols[t.name.lower()]
            fks = tuple(
                fk
                for fk in t.foreign_keys
                if fk.ref_table.lower() in kept_names
                and fk.column.lower() in cols
                and fk.ref_column.lower() in keep_cols[fk.ref_table.lower()]
            )
            out.append(Table(t.name, tuple(c for c in t.columns if c.name.lower() in cols), fks, t.is_view))
        return Schema(tuple(out))


# Words that cannot be used bare as a name: SQLite's reserved words (measured: those SQLite
# refuses as unquoted table/column names), join words, and the core of ANSI SQL. Dialects with a
# list of their own in sqlglot (DuckDB, MySQL, ...) add it.
_RESERVED = frozenset(
    ["add", "all", "alter", "and", "as", "asc", "autoincrement", "between", "by", "case", "cast", "check", "collate", "commit", "constraint", "create", "cross", "current_date", "current_time", "current_timestamp", "default", "deferrable", "delete", "desc", "distinct", "drop", "else", "escape", "except", "exists", "foreign", "from", "full", "glob", "group", "having", "in", "index", "inner", "insert", "intersect", "into", "is", "isnull", "join", "left", "like", "limit", "match", "natural", "not", "nothing", "notnull", "null", "offset", "on", "or", "order", "outer", "primary", "raise", "recursive", "references", "regexp", "returning", "right", "select", "set", "table", "then", "to", "transaction", "union", "unique", "update", "using", "values", "when", "where", "window", "with"]
)


@lru_cache(maxsize=8192)
def quote_identifier(name: str, dialect: str = "sqlite") -> str:
    """``name`` as it must be written in ``dialect``: bare when that is safe, quoted otherwise.

    Quoted when it has characters other than letters, digits and ``_``, is a reserved word, or
    would be case-folded by the dialect (e.g. ``FacID`` in PostgreSQL).
    """
    d = sqlglot.Dialect.get_or_raise(dialect)
    reserved = _RESERVED | getattr(d.generator_class, "RESERVED_KEYWORDS", frozenset())
    if (
        re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)
        and name.lower() not in reserved
        and not d.case_sensitive(name)
    ):
        return name
    return exp.to_identifier(name, quoted=True).sql(dialect=d)


class Database:
    """An engine plus what the prompts need from it: dialect, schema, sample rows, rendered DDL.

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
        self.dialect = dialect or _sqlglot_dialect(engine.dialect.name)
        self.name = name or _display_name(engine.url)
        self.include_tables = _name_list("include_tables", include_tables)
        self.ignore_tables = _name_list("ignore_tables", ignore_tables)
        self.schema_name = _check_schema_name(engine, schema)
        bound_connect_timeout(engine)  # a silent PostgreSQL server must not hang the schema read
        _warn_unbounded_once(engine)
        if self.schema_name is not None:
            _check_schema_exists(engine, self.schema_name, self.name)
            _pin_search_path(engine, self.schema_name)
        self._samples: dict[str, tuple[int, list[str], list[tuple]]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = f", schema={self.schema_name!r}" if self.schema_name else ""
        return f"Database(name={self.name!r}, dialect={self.dialect!r}{where})"

    @cached_property
    def schema(self) -> Schema:
        """Tables and views, columns, primary and foreign keys; read on first use, then cached."""
        try:
            if self.engine.dialect.name == "duckdb":
                raw = _introspect_duckdb(self.engine, self.schema_name)
            else:
                raw = _introspect_sqlalchemy(self.engine, self.schema_name)
        except DatabaseError:
            raise
        except (sqlalchemy.exc.SQLAlchemyError, _dbapi_error(self.engine), OSError) as exc:
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
        raw = _filter_tables(raw, self.include_tables, self.ignore_tables, where)
        return _build_schema(raw)

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

    def render_schema(
        self, schema: Schema | None = None, *, sample_rows: int = 3, value_chars: int = 60
    ) -> str:
        """The schema as the prompts show it: CREATE TABLE statements with keys and sample rows."""
        schema = self.schema if schema is None else schema
        return "\n\n".join(self._render_table(t, sample_rows, value_chars) for t in schema.tables)

    def _render_table(self, table: Table, sample_rows: int, value_chars: int) -> str:
        def q(name: str) -> str:
            return quote_identifier(name, self.dialect)

        lines = [f"  {q(c.name)} {c.type}".rstrip() for c in table.columns]
        pk = [q(c.name) for c in table.columns if c.primary_key]
        if pk:
            lines.append(f"  PRIMARY KEY ({', '.join(pk)})")
        lines += [
            f"  FOREIGN KEY ({q(fk.column)}) REFERENCES {q(fk.ref_table)}({q(fk.ref_column)})"
            for fk in table.foreign_keys
        ]
        text = f"CREATE TABLE {q(table.name)} (\n" + ",\n".join(lines) + "\n);"
        if sample_rows <= 0:
            return text
        try:
            columns, rows = self.sample_rows(table.name, sample_rows)
        except DatabaseError:
            return text  # e.g. a table the schema names but the database cannot read
        position = {c.lower(): i for i, c in enumerate(columns)}
        keep = [position[c.name.lower()] for c in table.columns if c.name.lower() in position]
        if not rows:
            return text + f"\n/*\nTable {table.name} has no rows.\n*/"
        header = "\t".join(columns[i] for i in keep)
        body = "\n".join("\t".join(format_value(r[i], value_chars) for i in keep) for r in rows)
        noun = "example row" if len(rows) == 1 else "example rows"
        return text + f"\n/*\n{len(rows)} {noun} from table {table.name}:\n{header}\n{body}\n*/"


# --------------------------------------------------------------------------- introspection

# table -> (columns [(name, type)], primary key [names], foreign keys [(cols, ref_table, ref_cols)],
# is a view)
_RawSchema = dict[
    str, tuple[list[tuple[str, str]], list[str], list[tuple[list[str], str, list[Any]]], bool]
]


def _introspect_sqlalchemy(engine: sqlalchemy.Engine, schema: str | None = None) -> _RawSchema:
    raw: _RawSchema = {}
    with warnings.catch_warnings():
        # Spider-style files have types such as INTEGER(11) that SQLAlchemy warns about.
        warnings.simplefilter("ignore", sqlalchemy.exc.SAWarning)
        inspector = sqlalchemy.inspect(engine)
        tables = inspector.get_table_names(schema=schema)
        views = list(inspector.get_view_names(schema=schema))
        if engine.dialect.name == "postgresql":
            views += [v for v in inspector.get_materialized_view_names(schema=schema) if v not in views]
        views = [v for v in views if v not in tables]
        for table in _creation_order(engine, [*tables, *views]):
            columns = [
                (c["name"], _type_text(c["type"], engine.dialect))
                for c in inspector.get_columns(table, schema=schema)
            ]
            if table in views:  # a view has no keys of its own
                raw[table] = (columns, [], [], True)
                continue
            pk = inspector.get_pk_constraint(table, schema=schema).get("constrained_columns") or []
            fks = [
                (fk["constrained_columns"], fk["referred_table"], fk["referred_columns"])
                for fk in inspector.get_foreign_keys(table, schema=schema)
                if fk.get("referred_schema") in (None, schema)  # keys into another schema: not shown
            ]
            raw[table] = (columns, list(pk), fks, False)
    return raw


def _creation_order(engine: sqlalchemy.Engine, names: list[str]) -> list[str]:
    """SQLite: tables and views in creation order (Spider's "schema order"); else as given."""
    if engine.dialect.name != "sqlite":
        return names
    with engine.connect() as conn:
        created = conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
        ).scalars()
        rank = {name: i for i, name in enumerate(created)}
    return sorted(names, key=lambda n: rank.get(n, len(rank)))


def _introspect_duckdb(engine: sqlalchemy.Engine, schema: str | None = None) -> _RawSchema:
    # duckdb-engine's Inspector relies on pg_catalog details DuckDB lacks; read its own catalog.
    where = "WHERE database_name = current_database() AND schema_name = " + (
        "current_schema()" if schema is None else "'" + schema.replace("'", "''") + "'"
    )
    pooled = engine.raw_connection()
    try:
        cursor = pooled.cursor()
        cursor.execute(f"SELECT table_name FROM duckdb_tables() {where} ORDER BY table_oid")
        raw: _RawSchema = {row[0]: ([], [], [], False) for row in cursor.fetchall()}
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


def _dbapi_error(engine: sqlalchemy.Engine) -> type[Exception]:
    """The driver's base error class (PEP 249), e.g. ``sqlite3.Error`` or ``duckdb.Error``."""
    return getattr(getattr(engine.dialect, "loaded_dbapi", None), "Error", sqlite3.Error)


def _type_text(type_: Any, dialect: sqlalchemy.Dialect) -> str:
    if isinstance(type_, sqlalchemy.types.NullType):
        return ""  # SQLite columns declared without a type
    try:
        return str(type_.compile(dialect=dialect))
    except Exception:  # types a dialect cannot compile back
        try:
            return str(type_)
        except Exception:
            return ""


def _build_schema(raw: _RawSchema) -> Schema:
    """Frozen schema with foreign keys resolved to the real spelling of tables and columns."""
    by_lower = {t.lower(): t for t in raw}
    tables = []
    for name, (columns, pk, fks, is_view) in raw.items():
        pk_lower = {p.lower() for p in pk}
        cols = tuple(Column(c, t, c.lower() in pk_lower) for c, t in columns)
        col_names = {c.lower(): c for c, _ in columns}
        keys: list[ForeignKey] = []
        for src_cols, ref_table, ref_cols in fks:
            ref = by_lower.get(str(ref_table).lower())
            if ref is None:
                continue  # dangling key to a table that does not exist
            ref_col_names = {c.lower(): c for c, _ in raw[ref][0]}
            targets = list(ref_cols) if ref_cols and None not in ref_cols else list(raw[ref][1])
            for src, dst in zip(src_cols, targets, strict=False):  # extra parts: malformed key
                s, d = col_names.get(str(src).lower()), ref_col_names.get(str(dst).lower())
                if s and d and ForeignKey(s, ref, d) not in keys:
                    keys.append(ForeignKey(s, ref, d))
        tables.append(Table(name, cols, tuple(keys), is_view))
    return Schema(tuple(tables))


def _name_list(what: str, names: Iterable[str] | None) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, str):  # "orders" would otherwise be read as the names o, r, d, ...
        raise TypeError(f"{what} must be a list of table names, not the string {names!r}")
    return tuple(str(n) for n in names)


def _filter_tables(
    raw: _RawSchema, include: tuple[str, ...] | None, ignore: tuple[str, ...] | None, where: str
) -> _RawSchema:
    """``raw`` narrowed to ``include`` minus ``ignore``; names it does not have are an error."""
    by_lower = {t.lower(): t for t in raw}
    for what, names in (("include_tables", include), ("ignore_tables", ignore)):
        unknown = [n for n in names or () if n.lower() not in by_lower]
        if unknown:
            raise DatabaseError(
                f"{what} names {', '.join(map(repr, unknown))}, not a table or view of {where}; "
                f"it has: {', '.join(raw)}. Fix the names (case does not matter)."
            )
    keep = set(by_lower) if include is None else {n.lower() for n in include}
    keep -= {n.lower() for n in ignore or ()}
    out = {t: v for t, v in raw.items() if t.lower() in keep}
    if not out:
        raise DatabaseError(
            f"include_tables/ignore_tables leave no table of {where}; keep at least one."
        )
    return out


# --------------------------------------------------------------------------- engines without a timeout

#: Dialects whose queries the executor can interrupt at the timeout (execution.py has a runner each).
BOUNDED_DIALECTS = ("sqlite", "duckdb", "postgresql", "mysql", "mariadb")
# Weak, not id(): a new engine can reuse a collected one's id.
_WARNED_UNBOUNDED: weakref.WeakSet[sqlalchemy.Engine] = weakref.WeakSet()
_LOG = logging.getLogger("route_graph")


def _warn_unbounded_once(engine: sqlalchemy.Engine) -> None:
    """Say once per engine that its queries cannot be stopped at the timeout (never a silent gap)."""
    if engine.dialect.name in BOUNDED_DIALECTS or engine in _WARNED_UNBOUNDED:
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


# --------------------------------------------------------------------------- schemas

_SCHEMA_DIALECTS = ("postgresql", "duckdb")
_PINNED_SCHEMA = "_route_graph_schema"  # on an engine: the schema its search_path is pinned to
_SEARCH_PATH_KEY = "route_graph.search_path"  # in a pooled connection's info: the statement run


def _check_schema_name(engine: sqlalchemy.Engine, schema: str | None) -> str | None:
    if schema is None:
        return None
    if not isinstance(schema, str) or not schema.strip():
        raise DatabaseError(f"schema must be a non-empty schema name, got {schema!r}.")
    if engine.dialect.name not in _SCHEMA_DIALECTS:
        raise DatabaseError(
            f"schema={schema!r} is supported on PostgreSQL and DuckDB, not {engine.dialect.name}: "
            "leave it out and connect to the database that holds the tables instead."
        )
    return schema


def _search_path_statement(dialect: str, schema: str) -> str:
    """The session statement that makes ``schema`` where bare names resolve, the default after it.

    The default schema stays on the path so functions installed there (extensions) still resolve.
    """
    if dialect == "postgresql":
        return f"SET search_path TO {quote_identifier(schema, 'postgres')}, public"
    quoted = exp.to_identifier(schema, quoted=True).sql(dialect="duckdb").replace("'", "''")
    return f"SET search_path = '{quoted},main'"


def _pin_search_path(engine: sqlalchemy.Engine, schema: str) -> None:
    """Set ``search_path`` to ``schema`` on every connection ``engine`` hands out; idempotent.

    Why the search path and not qualified names in the prompts: the model copies the names the
    prompt shows, schema linking and the evaluation compare bare table names, and LangChain's
    ``SQLDatabase`` does the same (it sets the path before each query). A pool ``checkout``
    listener runs the statement once per DB-API connection (remembered in its ``info``, which a
    reconnect clears), so connections already in the pool are covered too. On PostgreSQL it runs
    in its own committed statement: a ``SET`` inside a transaction that is rolled back (as every
    query the executor runs is) would be undone. The executor keeps this path when it lowers a
    superuser to ``pg_read_all_data``.
    """
    pinned = getattr(engine, _PINNED_SCHEMA, None)
    if pinned is not None:
        if pinned != schema:
            raise DatabaseError(
                f"This engine already reads the schema {pinned!r} for another Database; make a "
                f"separate engine (sqlalchemy.create_engine) for the schema {schema!r}."
            )
        return
    statement = _search_path_statement(engine.dialect.name, schema)

    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if record.info.get(_SEARCH_PATH_KEY) == statement:
            return
        autocommit = getattr(dbapi_connection, "autocommit", None)
        switch = autocommit is False  # psycopg/psycopg2 outside autocommit: make the SET stick
        if switch:
            dbapi_connection.autocommit = True
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(statement)
            finally:
                cursor.close()
        finally:
            if switch:
                dbapi_connection.autocommit = False
        record.info[_SEARCH_PATH_KEY] = statement

    sqlalchemy.event.listen(engine, "checkout", on_checkout)
    setattr(engine, _PINNED_SCHEMA, schema)


def _check_schema_exists(engine: sqlalchemy.Engine, schema: str, name: str) -> None:
    """Fail before the engine is touched: DuckDB refuses a search_path naming a missing schema
    (every later checkout of the user's engine would fail); PostgreSQL silently ignores one."""
    try:
        if engine.dialect.name == "duckdb":
            with engine.connect() as conn:
                names = [
                    str(r)
                    for r in conn.exec_driver_sql(
                        "SELECT DISTINCT schema_name FROM duckdb_schemas() WHERE database_name = "
                        "current_database() ORDER BY 1"
                    ).scalars()
                ]
        else:
            names = sqlalchemy.inspect(engine).get_schema_names()
    except (sqlalchemy.exc.SQLAlchemyError, _dbapi_error(engine), OSError) as exc:
        orig = getattr(exc, "orig", None) or exc
        raise DatabaseError(f"Cannot read the schemas of {name}: {orig}. Check the URL.") from exc
    if schema not in names:
        shown = [n for n in names if n != "information_schema" and not n.startswith("pg_")]
        raise DatabaseError(
            f"No schema {schema!r} in {name}; its schemas are: {', '.join(shown) or 'none readable'} "
            "(schema names are case-sensitive)."
        )


# --------------------------------------------------------------------------- opening


def _sqlglot_dialect(sqlalchemy_name: str) -> str:
    name = _SQLGLOT_DIALECTS.get(sqlalchemy_name, sqlalchemy_name)
    try:
        sqlglot.Dialect.get_or_raise(name)
    except (ValueError, SqlglotError):
        return ""  # sqlglot's generic dialect
    return name


def _display_name(url: sqlalchemy.URL) -> str:
    database = url.database or ""
    if database.startswith("file:"):
        database = database[5:].split("?", 1)[0]
    if database and database != ":memory:":
        return Path(database).stem or database
    return url.get_backend_name()


def _sqlite_read_uri(path: Path) -> str:
    """Read-only URI for ``path``; ``immutable=1`` for a WAL-mode file that no one has open.

    A WAL-mode file opened ``mode=ro`` gets ``-wal``/``-shm`` files that a reader cannot remove
    again. When no ``-wal`` file lies beside it, every committed change is in the file itself and
    no connection is writing it, so it is opened ``immutable=1``: no locks, no side files. With a
    ``-wal`` file present (a writer has it open, or crashed), it is opened plainly read-only so
    the writer's recent commits are seen; the side files were the writer's already. A writer that
    starts while an immutable connection is open is not seen by it (open the file again).
    """
    uri = path.as_uri() + "?mode=ro"
    try:
        with path.open("rb") as handle:
            header = handle.read(20)
    except OSError:
        return uri  # let sqlite3 report it
    wal_mode = len(header) == 20 and header[18] == 2 and header[19] == 2
    if wal_mode and not Path(f"{path}-wal").exists():
        uri += "&immutable=1"
    return uri


def _open_sqlite_file(path: Path) -> Database:
    path = path.resolve()

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(_sqlite_read_uri(path), uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only=ON")
        return conn

    # "sqlite://" + creator would get SingletonThreadPool; threads need a real pool.
    engine = sqlalchemy.create_engine("sqlite://", creator=connect, poolclass=QueuePool)
    return Database(engine, name=path.stem, dialect="sqlite")


def _open_duckdb_file(path: Path) -> Database:
    try:
        import duckdb_engine  # noqa: F401
    except ImportError as exc:
        raise DatabaseError(
            f"{path} is a DuckDB file but DuckDB support is not installed: "
            "pip install 'route-graph[duckdb]'"
        ) from exc
    url = sqlalchemy.URL.create("duckdb", database=str(path.resolve()))
    engine = sqlalchemy.create_engine(
        url, connect_args={"read_only": True, "config": {"enable_external_access": False}}
    )
    # No progress bar on stdout, from the first query on (introspection included).
    sqlalchemy.event.listen(engine, "connect", lambda conn, record: quiet_duckdb(conn, record.info))
    return Database(engine, name=path.stem, dialect="duckdb")


def _open_path(path: Path) -> Database:
    path = path.expanduser()
    if not path.exists():
        raise DatabaseError(f"No database file at {path}; {_HINT_URL}")
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix in {".sqlite", ".db", ".duckdb"})
        hint = f" (it contains {', '.join(found[:5])})" if found else ""
        raise DatabaseError(f"{path} is a directory; pass the database file inside it{hint}.")
    try:
        with path.open("rb") as handle:
            header = handle.read(16)
    except OSError as exc:
        raise DatabaseError(f"Cannot read {path}: {exc}") from exc
    if path.suffix.lower() in _DUCKDB_SUFFIXES or header[8:12] == b"DUCK":
        return _open_duckdb_file(path)
    if header and not header.startswith(_SQLITE_MAGIC):
        raise DatabaseError(
            f"{path} is not a database (no SQLite header); {_HINT_URL}, or a .duckdb file."
        )
    return _open_sqlite_file(path)


def _sqlite_url_file(url: sqlalchemy.URL) -> Path | None:
    """The file a ``sqlite://`` URL names (plain path or ``file:`` URI), None for in-memory ones."""
    database = url.database or ""
    query = {k: v if isinstance(v, str) else v[-1] for k, v in url.query.items()}
    if database in ("", ":memory:") or query.get("mode") == "memory":
        return None
    if not database.startswith("file:"):
        return Path(database)
    parts = urlsplit(database)
    name = unquote(parts.path)
    if name in ("", ":memory:") or "mode=memory" in parts.query:
        return None
    return Path(name)


def _shown_url(text: str) -> str:
    """The URL for messages, password masked."""
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


def _open_url(text: str) -> Database:
    shown = _shown_url(text)
    try:
        url = sqlalchemy.make_url(text)
        backend = url.get_backend_name()
    except (sqlalchemy.exc.ArgumentError, ValueError, TypeError) as exc:  # e.g. a port that is not a number
        raise DatabaseError(f"Cannot parse the database URL {shown!r} ({exc}); {_HINT_URL_FORM}.") from exc
    database = url.database or ""
    if backend == "sqlite":
        # Open files ourselves: read-only, and never create a missing file (sqlite3 would, for a
        # plain path or a file: URI without mode=ro, whatever the URL's uri/mode parameters say).
        path = _sqlite_url_file(url)
        if path is not None:
            if not path.exists():
                raise DatabaseError(f"No database file at {path} (from {shown!r}); {_HINT_URL}")
            return _open_path(path)
    elif backend == "duckdb" and database not in ("", ":memory:"):
        path = Path(database)
        if not path.exists():
            raise DatabaseError(f"No database file at {path} (from {shown!r}); {_HINT_URL}")
        return _open_duckdb_file(path)
    try:
        engine = sqlalchemy.create_engine(url)
    except sqlalchemy.exc.NoSuchModuleError as exc:
        hint = _DRIVER_HINTS.get(backend, "install the SQLAlchemy dialect package for it")
        raise DatabaseError(
            f"Unsupported or uninstalled database URL scheme {url.drivername!r}: {hint}."
        ) from exc
    except ImportError as exc:
        hint = _DRIVER_HINTS.get(backend, f"pip install {exc.name or 'the driver'}")
        raise DatabaseError(f"The driver for {url.drivername!r} is not installed: {hint}.") from exc
    except (sqlalchemy.exc.ArgumentError, ValueError, TypeError) as exc:  # bad query parameters
        raise DatabaseError(f"Cannot use the database URL {shown!r} ({exc}); {_HINT_URL_FORM}.") from exc
    return Database(engine, name=_display_name(url))


def open_database(
    db: str | os.PathLike[str] | sqlalchemy.Engine | Database | SQLDatabase,
    *,
    schema: str | None = None,
    include_tables: Iterable[str] | None = None,
    ignore_tables: Iterable[str] | None = None,
) -> Database:
    """Open ``db`` (file path, SQLAlchemy URL, Engine, ``Database`` or LangChain ``SQLDatabase``).

    Files are opened read-only; the schema is read here so a wrong path, schema or table name
    fails now, with a ``DatabaseError`` that says what to pass instead. Views are read as tables.
    ``schema`` (PostgreSQL, DuckDB) reads that schema instead of the default one;
    ``include_tables`` keeps only the named tables/views, ``ignore_tables`` drops some (see
    ``Database``). A ``SQLDatabase`` brings its own schema and usable tables; options given here
    win. A ``Database`` is returned as is when no option is given, else a new one on its engine.
    """
    options = {"schema": schema, "include_tables": include_tables, "ignore_tables": ignore_tables}
    if isinstance(db, Database):
        if all(v is None for v in options.values()):
            return db
        database = _with_options(db, options)
    elif isinstance(db, sqlalchemy.Engine):
        database = Database(db, **options)
    elif isinstance(getattr(db, "_engine", None), sqlalchemy.Engine):  # langchain SQLDatabase
        usable = getattr(db, "get_usable_table_names", None)
        if options["include_tables"] is None and options["ignore_tables"] is None and callable(usable):
            options["include_tables"] = list(usable())
        if options["schema"] is None:
            options["schema"] = getattr(db, "_schema", None)
        database = Database(db._engine, **options)  # type: ignore[union-attr]
    elif isinstance(db, (str, os.PathLike)):
        text = os.fsdecode(os.fspath(db))
        database = _open_url(text) if "://" in text else _open_path(Path(text))
        if any(v is not None for v in options.values()):
            database = _with_options(database, options)
    else:
        raise TypeError(
            "open_database expects a file path, a SQLAlchemy URL or Engine, a Database or a "
            f"langchain SQLDatabase, got {type(db).__name__}"
        )
    database.schema  # noqa: B018 - fail now, not in the middle of a graph run
    return database


def _with_options(database: Database, options: dict[str, Any]) -> Database:
    """A new ``Database`` on ``database``'s engine; options not given keep ``database``'s."""
    kept = {
        "schema": database.schema_name,
        "include_tables": database.include_tables,
        "ignore_tables": database.ignore_tables,
    }
    kept.update({k: v for k, v in options.items() if v is not None})
    return Database(database.engine, name=database.name, dialect=database.dialect, **kept)
