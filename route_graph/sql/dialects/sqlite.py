"""SQLite: an authorizer that allows only reading, on a ``query_only`` connection.

Files we open are ``mode=ro`` with ``PRAGMA query_only=ON`` (``sql.opening``); every execution
installs an authorizer that allows only SELECT/READ/FUNCTION/RECURSIVE (no denied function),
limits ATTACH to zero databases and caps value sizes; a progress handler enforces the deadline.
Engines we did not open (a user's Engine or ``SQLDatabase``) get the same for each query.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import sqlalchemy

from route_graph.sql.dialects.base import Dialect
from route_graph.sql.fetch import Fetched, fetch_rows
from route_graph.sql.guard import is_denied_function
from route_graph.sql.pool import QueryTimeout, Rejected, checkout

__all__ = ["DIALECT", "run"]

_SQLITE_MAX_VALUE_BYTES = 32 * 1024 * 1024

_AUTH_ACTIONS = {
    getattr(sqlite3, f"SQLITE_{name}"): name
    for name in ["CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE", "CREATE_TEMP_TRIGGER", "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE", "DROP_INDEX", "DROP_TABLE", "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER", "DROP_VIEW", "INSERT", "PRAGMA", "READ", "SELECT", "TRANSACTION", "UPDATE", "ATTACH", "DETACH", "ALTER_TABLE", "REINDEX", "ANALYZE", "CREATE_VTABLE", "DROP_VTABLE", "FUNCTION", "SAVEPOINT", "RECURSIVE"]
    if hasattr(sqlite3, f"SQLITE_{name}")
}
_AUTH_ALLOWED = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
_SQLITE_REFUSALS = (
    "not authorized",
    "authorization denied",
    "readonly database",
    "one statement at a time",
    "null character",
)


def _lenient_text(data: bytes) -> str:
    # Some Spider/BIRD databases hold text that is not valid UTF-8.
    return data.decode("utf-8", errors="replace")


def run(engine: sqlalchemy.Engine, sql: str, deadline: float, max_rows: int) -> Fetched:
    pooled = checkout(engine, deadline)
    try:
        conn: sqlite3.Connection = pooled.driver_connection  # type: ignore[assignment]
        denied: list[str] = []
        timed_out = False

        def authorize(action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
            if action in _AUTH_ALLOWED:
                if action == sqlite3.SQLITE_FUNCTION and is_denied_function(arg2 or ""):
                    denied.append(f"the function {arg2}()")
                    return sqlite3.SQLITE_DENY
                return sqlite3.SQLITE_OK
            target = " ".join(str(a) for a in (arg1, arg2) if a)
            denied.append(_AUTH_ACTIONS.get(action, f"action {action}") + (f" ({target})" if target else ""))
            return sqlite3.SQLITE_DENY

        def progress() -> int:
            nonlocal timed_out
            if time.monotonic() > deadline:
                timed_out = True
                return 1
            return 0

        # The same protections for engines we did not open ourselves (user Engine/SQLDatabase).
        was_query_only = conn.execute("PRAGMA query_only").fetchone()[0]
        if not was_query_only:
            conn.execute("PRAGMA query_only=ON")
        old_attached = conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        old_length = conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _SQLITE_MAX_VALUE_BYTES)
        old_text_factory = conn.text_factory
        conn.text_factory = _lenient_text
        conn.set_authorizer(authorize)
        conn.set_progress_handler(progress, 1000)
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(sql)
                fetched = fetch_rows(cursor, max_rows)
            finally:
                cursor.close()
        except sqlite3.Error as exc:
            if timed_out:
                raise QueryTimeout from exc
            if denied:
                raise Rejected(
                    f"Refused by the read-only connection: {denied[0]} is not allowed; "
                    "only read-only SELECT queries may run."
                ) from exc
            if any(s in str(exc) for s in _SQLITE_REFUSALS):
                raise Rejected(f"Refused by the read-only connection: {str(exc).rstrip('.')}.") from exc
            raise
        finally:
            conn.set_progress_handler(None, 0)
            conn.set_authorizer(None)
            conn.text_factory = old_text_factory
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, old_length)
            conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, old_attached)
            conn.rollback()
            if not was_query_only:
                conn.execute("PRAGMA query_only=OFF")
        return fetched
    finally:
        pooled.close()


DIALECT = Dialect(names=("sqlite",), sqlglot="sqlite", run=run, interrupts=True, drivers=("pysqlite",))
