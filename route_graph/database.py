"""The database layer: open read-only, introspect the schema once, render it for prompts.

Built on SQLAlchemy (which LangChain's ``SQLDatabase`` wraps anyway), so langchain-community is
an optional interop path, never a dependency. SQLite and DuckDB files we open ourselves are
read-only at the connection level; model SQL additionally goes through ``execution.execute_sql``.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import warnings
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
from route_graph.execution import execute_sql, format_value, quiet_duckdb

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
    """A table with its columns in database order."""

    name: str
    columns: tuple[Column, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()

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
            out.append(Table(t.name, tuple(c for c in t.columns if c.name.lower() in cols), fks))
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
    """An engine plus what the prompts need from it: dialect, schema, sample rows, rendered DDL."""

    def __init__(
        self,
        engine: sqlalchemy.Engine,
        *,
        name: str | None = None,
        dialect: str | None = None,
        include_tables: Iterable[str] | None = None,
    ) -> None:
        self.engine = engine
        self.dialect = dialect or _sqlglot_dialect(engine.dialect.name)
        self.name = name or _display_name(engine.url)
        self._include = None if include_tables is None else {t.lower() for t in include_tables}
        self._samples: dict[str, tuple[int, list[str], list[tuple]]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Database(name={self.name!r}, dialect={self.dialect!r})"

    @cached_property
    def schema(self) -> Schema:
        """Tables, columns, primary and foreign keys; introspected on first use, then cached."""
        try:
            if self.engine.dialect.name == "duckdb":
                raw = _introspect_duckdb(self.engine)
            else:
                raw = _introspect_sqlalchemy(self.engine)
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
        if self._include is not None:
            raw = {t: v for t, v in raw.items() if t.lower() in self._include}
        if not raw:
            raise DatabaseError(
                f"The database {self.name} has no tables; check the path or URL "
                "(a new or empty file has none)."
            )
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

# table -> (columns [(name, type)], primary key [names], foreign keys [(cols, ref_table, ref_cols)])
_RawSchema = dict[str, tuple[list[tuple[str, str]], list[str], list[tuple[list[str], str, list[Any]]]]]


def _introspect_sqlalchemy(engine: sqlalchemy.Engine) -> _RawSchema:
    raw: _RawSchema = {}
    with warnings.catch_warnings():
        # Spider-style files have types such as INTEGER(11) that SQLAlchemy warns about.
        warnings.simplefilter("ignore", sqlalchemy.exc.SAWarning)
        inspector = sqlalchemy.inspect(engine)
        for table in _creation_order(engine, inspector.get_table_names()):
            columns = [
                (c["name"], _type_text(c["type"], engine.dialect)) for c in inspector.get_columns(table)
            ]
            pk = inspector.get_pk_constraint(table).get("constrained_columns") or []
            fks = [
                (fk["constrained_columns"], fk["referred_table"], fk["referred_columns"])
                for fk in inspector.get_foreign_keys(table)
            ]
            raw[table] = (columns, list(pk), fks)
    return raw


def _creation_order(engine: sqlalchemy.Engine, names: list[str]) -> list[str]:
    """SQLite: tables in the order they were created (Spider's "schema order"); else as given."""
    if engine.dialect.name != "sqlite":
        return names
    with engine.connect() as conn:
        created = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'").scalars()
        rank = {name: i for i, name in enumerate(created)}
    return sorted(names, key=lambda n: rank.get(n, len(rank)))


def _introspect_duckdb(engine: sqlalchemy.Engine) -> _RawSchema:
    # duckdb-engine's Inspector relies on pg_catalog details DuckDB lacks; read its own catalog.
    where = "WHERE database_name = current_database() AND schema_name = current_schema()"
    pooled = engine.raw_connection()
    try:
        cursor = pooled.cursor()
        cursor.execute(f"SELECT table_name FROM duckdb_tables() {where} ORDER BY table_oid")
        raw: _RawSchema = {row[0]: ([], [], []) for row in cursor.fetchall()}
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
    for name, (columns, pk, fks) in raw.items():
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
        tables.append(Table(name, cols, tuple(keys)))
    return Schema(tuple(tables))


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


def open_database(db: str | os.PathLike[str] | sqlalchemy.Engine | Database | SQLDatabase) -> Database:
    """Open ``db`` (file path, SQLAlchemy URL, Engine, ``Database`` or LangChain ``SQLDatabase``).

    Files are opened read-only; the schema is read here so a wrong path fails now, with a
    ``DatabaseError`` that says what to pass instead. A ``Database`` is returned as is.
    """
    if isinstance(db, Database):
        return db
    if isinstance(db, sqlalchemy.Engine):
        database = Database(db)
    elif isinstance(getattr(db, "_engine", None), sqlalchemy.Engine):  # langchain SQLDatabase
        usable = getattr(db, "get_usable_table_names", None)
        database = Database(db._engine, include_tables=usable() if callable(usable) else None)  # type: ignore[union-attr]
    elif isinstance(db, (str, os.PathLike)):
        text = os.fsdecode(os.fspath(db))
        database = _open_url(text) if "://" in text else _open_path(Path(text))
    else:
        raise TypeError(
            "open_database expects a file path, a SQLAlchemy URL or Engine, a Database or a "
            f"langchain SQLDatabase, got {type(db).__name__}"
        )
    database.schema  # noqa: B018 - fail now, not in the middle of a graph run
    return database
