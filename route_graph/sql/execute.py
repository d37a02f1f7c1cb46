"""SQLer: run model-written SQL read-only, time-limited and row-capped; never raise for bad SQL.

Model SQL is untrusted. Two independent guards stand between it and the database: the static
check (``guard.check_read_only``), then the connection or server, set up by the engine's dialect
(``sql.dialects``: each dialect's runner says how it keeps a query read-only and stops it at the
deadline). Rejections, errors and timeouts come back as an ``ExecutionResult`` with ``ok=False``.

This module needs only an engine and a dialect (``SqlTarget``), so it never imports the database
layer, which builds on it.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Protocol

import sqlalchemy

from route_graph.sql.dialects import dialect_for
from route_graph.sql.guard import check_read_only, strip_statement
from route_graph.sql.pool import NoConnection, QueryTimeout, Rejected, pool_is_full
from route_graph.sql.result import ErrorKind, ExecutionResult, short_error

__all__ = ["SqlTarget", "execute_sql"]


class SqlTarget(Protocol):
    """What ``execute_sql`` needs of a database: its engine and its sqlglot dialect.

    ``sql.database.Database`` is one; anything with these two attributes will do, which keeps this
    module free of the database layer (that layer imports it, not the other way round).
    """

    @property
    def engine(self) -> sqlalchemy.Engine: ...

    @property
    def dialect(self) -> str: ...


# Errors that mean "this SQL failed", as opposed to a bug in the caller.
_VALUE_ERRORS = (ValueError, ArithmeticError, MemoryError, RecursionError)


def execute_sql(
    db: SqlTarget, sql: str, *, timeout_s: float = 5.0, max_rows: int = 1000
) -> ExecutionResult:
    """Run one read-only query; never raises for bad SQL (see ``ExecutionResult.error_kind``).

    ``timeout_s`` bounds the wait for a pooled connection plus the query and its fetch.
    """
    if not isinstance(sql, str):
        raise TypeError(f"sql must be a str, got {type(sql).__name__}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows!r}")
    start = time.perf_counter()

    def failed(message: str, kind: ErrorKind) -> ExecutionResult:
        return ExecutionResult(
            sql=sql, ok=False, error=short_error(message), error_kind=kind,
            elapsed_s=round(time.perf_counter() - start, 6),
        )

    reason = check_read_only(sql, db.dialect)
    if reason is not None:
        return failed(reason, "rejected")
    engine = db.engine
    dialect = dialect_for(engine)
    dbapi_error = getattr(getattr(engine.dialect, "loaded_dbapi", None), "Error", sqlite3.Error)
    timeout_message = f"query exceeded the {float(timeout_s)} s limit"
    run_start = time.perf_counter()
    deadline = time.monotonic() + timeout_s  # before the checkout: waiting for a connection counts
    try:
        fetched = dialect.run(engine, strip_statement(sql), deadline, max_rows)
    except NoConnection:
        if pool_is_full(engine):
            return failed(
                f"no database connection became free within the {float(timeout_s)} s limit (all are "
                "busy with other queries), so the query did not run; run fewer questions at once or "
                "raise the execution timeout",
                "timeout",
            )
        return failed(
            f"no database connection became free within the {float(timeout_s)} s limit: connecting "
            "to the database did not finish (the server does not answer), so the query did not "
            "run; check that the database server is up and reachable",
            "timeout",
        )
    except QueryTimeout:
        return failed(timeout_message, "timeout")
    except Rejected as exc:
        return failed(str(exc), "rejected")
    except (dbapi_error, sqlalchemy.exc.SQLAlchemyError, *_VALUE_ERRORS) as exc:
        orig = getattr(exc, "orig", None)
        return failed(str(orig if orig is not None else exc) or type(exc).__name__, "error")
    if not dialect.interrupts and time.perf_counter() - run_start > timeout_s:
        return failed(timeout_message, "timeout")  # could not interrupt it; late still means failed
    elapsed = time.perf_counter() - start
    return ExecutionResult(
        sql=sql, ok=True, columns=fetched.columns, rows=fetched.rows, row_count=len(fetched.rows),
        truncated=fetched.more, cells_truncated=fetched.cells_truncated, elapsed_s=round(elapsed, 6),
    )
