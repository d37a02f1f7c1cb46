"""Opening a database from whatever the user has: a file path, a URL, an Engine, a ``SQLDatabase``.

Files are opened read-only (SQLite ``mode=ro`` + ``query_only``; DuckDB ``read_only`` without
external access) and never created; the schema is read at once, so a wrong path, schema or table
name fails here with a ``DatabaseError`` that says what to pass instead.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import sqlalchemy
from sqlalchemy.pool import QueuePool

from route_graph.errors import DatabaseError
from route_graph.sql.database import Database, display_name
from route_graph.sql.dialects import dialect_named
from route_graph.sql.dialects.duckdb import quiet_duckdb
from route_graph.sql.dialects.generic import DRIVER_HINTS

if TYPE_CHECKING:  # optional extra; duck-typed at run time
    from langchain_community.utilities import SQLDatabase

__all__ = ["open_database"]

_DUCKDB_SUFFIXES = {".duckdb", ".ddb"}
_SQLITE_MAGIC = b"SQLite format 3\x00"
_HINT_URL = "pass a path to an existing SQLite file, or a SQLAlchemy URL such as sqlite:///path.db"
_HINT_URL_FORM = (
    "write it as dialect+driver://user:password@host:port/database "
    "(e.g. postgresql://me@localhost:5432/shop or sqlite:///path/to/file.db)"
)
_PASSWORD_IN_URL = re.compile(r"(://[^/:@\s]*:)[^@/\s]*@")


def _driver_hint(backend: str) -> str:
    """What to install for a SQLAlchemy backend whose driver is missing ("" when unknown)."""
    return dialect_named(backend).driver_hint or DRIVER_HINTS.get(backend, "")


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
        hint = _driver_hint(backend) or "install the SQLAlchemy dialect package for it"
        raise DatabaseError(
            f"Unsupported or uninstalled database URL scheme {url.drivername!r}: {hint}."
        ) from exc
    except ImportError as exc:
        hint = _driver_hint(backend) or f"pip install {exc.name or 'the driver'}"
        raise DatabaseError(f"The driver for {url.drivername!r} is not installed: {hint}.") from exc
    except (sqlalchemy.exc.ArgumentError, ValueError, TypeError) as exc:  # bad query parameters
        raise DatabaseError(f"Cannot use the database URL {shown!r} ({exc}); {_HINT_URL_FORM}.") from exc
    return Database(engine, name=display_name(url))


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
