"""PostgreSQL: a READ ONLY transaction, server and client timeouts, a superuser lowered to a reader.

An explicit ``READ ONLY`` transaction opened here whatever the engine's isolation level, local
statement and lock timeouts, a superuser's queries run as ``pg_read_all_data``, always rolled
back, rows streamed from a server-side cursor (psycopg 3) with variable-length columns cut on the
server; a connect timeout so a silent server cannot hang opening the database.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

import sqlalchemy

from route_graph.sql.dialects.base import Dialect
from route_graph.sql.fetch import MAX_CELL_CHARS, Fetched, fetch_rows
from route_graph.sql.pool import (
    QueryTimeout,
    Rejected,
    checkout,
    close_quietly,
    warn_once,
)
from route_graph.sql.schema import quote_identifier

__all__ = ["DIALECT", "PG_CONNECT_TIMEOUT_S", "bound_connect_timeout", "run", "search_path_statement"]

#: A superuser's queries run as this built-in role (PostgreSQL 14+): it may read every table but
#: not call superuser-only functions (server files, adminpack, dblink_connect_u, replication
#: slots, statistics resets, signals), so the server itself refuses what a deny-list might miss.
_PG_READER_ROLE = "pg_read_all_data"
_PG_SESSION_KEY = "route_graph.pg_session"  # in a pooled connection's info: (superuser, version)
_PG_CANCEL_GRACE_S = 0.5  # the client cancels a query the server's own timeout has not stopped
_PG_TIMEOUT_STATES = {"57014", "55P03"}  # query_canceled (statement timeout), lock_not_available
_PG_REFUSED_STATES = {"25006", "42501"}  # read_only_sql_transaction, insufficient_privilege
# Weak, not id(): a new engine can reuse a collected one's id and would never be warned.
_WARNED_SUPERUSER: weakref.WeakSet[sqlalchemy.Engine] = weakref.WeakSet()
_LOG = logging.getLogger("route_graph")


def _pg_sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)


def _pg_session(cursor: Any, info: dict[Any, Any]) -> tuple[bool, int]:
    """(connected as superuser, server_version_num), asked once per pooled connection."""
    known = info.get(_PG_SESSION_KEY)
    if known is None:
        cursor.execute("SELECT current_setting('is_superuser'), current_setting('server_version_num')")
        superuser, version = cursor.fetchone()
        known = info[_PG_SESSION_KEY] = (superuser == "on", int(version))
    return known


def _warn_superuser_once(engine: sqlalchemy.Engine) -> None:
    warn_once(
        _WARNED_SUPERUSER,
        engine,
        "route-graph is connected to PostgreSQL %s as a superuser. Model SQL runs in a read-only "
        "transaction as the role %s with a statement timeout, and the guard refuses file, "
        "connection and server-state functions; still, connect as a read-only role (README, "
        "Safety: CREATE ROLE ... LOGIN; GRANT pg_read_all_data TO ...).",
        engine.url.render_as_string(hide_password=True), _PG_READER_ROLE,
    )


def run(engine: sqlalchemy.Engine, sql: str, deadline: float, max_rows: int) -> Fetched:
    """Run ``sql`` in a transaction this function opens itself, whatever the engine's isolation.

    ``SET TRANSACTION READ ONLY`` and ``SET LOCAL statement_timeout`` only act inside a
    transaction, and an engine made with ``isolation_level="AUTOCOMMIT"`` has none: each statement
    would be its own, the settings void before the query runs. So the driver is switched to
    autocommit for the duration and the transaction is explicit: ``BEGIN READ ONLY``, local
    statement and lock timeouts, a superuser's role lowered to ``pg_read_all_data``, the query,
    ``ROLLBACK``; then session advisory locks (which a rollback keeps) are released and the
    driver's setting restored. A client-side cancel backs up the server's timeout.
    """
    bound_connect_timeout(engine)
    pooled = checkout(engine, deadline)
    driver = pooled.driver_connection
    was_autocommit = getattr(driver, "autocommit", None)
    explicit = isinstance(was_autocommit, bool)
    if explicit and not was_autocommit:
        try:
            driver.autocommit = True
        except Exception:  # a transaction is open after all: let the driver keep its own
            explicit = False
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def cancel() -> None:
        with lock:
            if state["done"]:
                return
            state["fired"] = True
        try:  # psycopg/psycopg2: a separate connection asks the server to cancel the query
            cancel_safe = getattr(driver, "cancel_safe", None)  # psycopg >= 3.2; cancel() is older
            cancel_safe(timeout=5) if cancel_safe is not None else driver.cancel()
        except Exception:
            pass

    timer = threading.Timer(max(0.0, deadline - time.monotonic()) + _PG_CANCEL_GRACE_S, cancel)
    timer.daemon = True
    cursor = pooled.cursor()
    try:
        cursor.execute("BEGIN READ ONLY" if explicit else "SET TRANSACTION READ ONLY")
        remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
        cursor.execute(f"SET LOCAL statement_timeout = {remaining_ms}")
        cursor.execute(f"SET LOCAL lock_timeout = {remaining_ms}")
        superuser, version = _pg_session(cursor, pooled.info)
        if superuser:
            _warn_superuser_once(engine)
            if version >= 140000:
                # Keep the name resolution the user had ("$user" would now mean the new role).
                cursor.execute(
                    "SELECT pg_catalog.set_config('search_path', coalesce((SELECT "
                    "string_agg(pg_catalog.quote_ident(s), ',') FROM "
                    "unnest(pg_catalog.current_schemas(false)) AS s), ''), true)"
                )
                cursor.execute(f"SET LOCAL ROLE {_PG_READER_ROLE}")
        timer.start()
        rows = _pg_rows(driver, cursor, sql)
        return fetch_rows(rows, max_rows)
    except Exception as exc:
        sqlstate = _pg_sqlstate(exc)
        if state["fired"] or sqlstate in _PG_TIMEOUT_STATES or "statement timeout" in str(exc):
            raise QueryTimeout from exc
        if sqlstate in _PG_REFUSED_STATES:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise Rejected(
                f"Refused by the read-only transaction: {first}; only read-only SELECT queries may run."
            ) from exc
        raise
    finally:
        with lock:
            state["done"] = True
            timer.cancel()
        _pg_finish(pooled, cursor, explicit, was_autocommit)


class _Batches:
    """A DB-API-like cursor over a psycopg 3 server-side cursor: ``fetchone`` from batches.

    A client-side cursor holds the whole result in memory before the first row is read (the row
    cap would come too late: ``SELECT repeat('x', 10^8) FROM generate_series(1, 100)`` is 10 GB).
    A server-side cursor sends rows when asked; batches grow while rows are small and drop to
    one row at a time once a row is large, so at most about one large row is held uncapped.
    """

    _MAX_BATCH = 256
    _LARGE_ROW = 1 << 20  # characters/bytes

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self._batch: list[Any] = []
        self._size = 1
        self.description = cursor.description

    def fetchone(self) -> Any:
        if not self._batch:
            self._batch = list(self._cursor.fetchmany(self._size))[::-1]
            if not self._batch:
                return None
            largest = max(
                sum(len(v) for v in row if isinstance(v, (str, bytes, bytearray, memoryview)))
                for row in self._batch
            )
            self._size = 1 if largest > self._LARGE_ROW else min(self._MAX_BATCH, self._size * 4)
        return self._batch.pop()


# PostgreSQL type OIDs whose text is short by construction (numbers, dates, times, booleans,
# uuids); every other column may hold a value of up to 1 GB and is cut on the server.
_PG_BOUNDED_TYPES = frozenset({16, 18, 19, 20, 21, 23, 26, 700, 701, 790, 1082, 1083, 1114, 1184, 1186, 1266, 1700, 2950})
_PG_BYTEA = 17


def _pg_capped_query(sql: str, description: Any, pg: Any) -> Any:
    """``sql`` wrapped so that every variable-length column leaves the server cut to ``MAX_CELL_CHARS + 1``.

    Measured (issue 29): through psycopg 3, ``SELECT repeat('x', 500000000)`` took 10.4 s with a
    5 s timeout, because the whole value crossed the socket after the statement had started
    returning rows (no server timeout applies then, and a cancel cannot stop a row in flight).
    Through psycopg 2 the same statement took 9.2 s on a busy machine (the 500 MB value was
    fetched whole, into memory). Cut on the server, a huge value is never transferred; the extra
    character still tells ``_cap_cell`` that the cell was cut. ``pg`` is the driver's ``sql``
    module (``psycopg.sql`` or ``psycopg2.sql``: the same composition API). None when no column
    needs it.
    """
    if all(d.type_code in _PG_BOUNDED_TYPES for d in description):
        return None
    limit = pg.Literal(MAX_CELL_CHARS + 1)
    items = []
    for i, column in enumerate(description):
        ref = pg.Identifier("route_graph_q", f"c{i}")
        if column.type_code in _PG_BOUNDED_TYPES:
            value: Any = ref
        elif column.type_code == _PG_BYTEA:
            value = pg.SQL("substring({} from 1 for {})").format(ref, limit)
        else:
            value = pg.SQL("left({}::text, {})").format(ref, limit)
        items.append(pg.SQL("{} AS {}").format(value, pg.Identifier(column.name)))
    aliases = pg.SQL(", ").join(pg.Identifier(f"c{i}") for i in range(len(description)))
    return pg.SQL("SELECT {} FROM ({}) AS route_graph_q({})").format(pg.SQL(", ").join(items), pg.SQL(sql), aliases)


def _pg_rows(driver: Any, cursor: Any, sql: str) -> Any:
    """Execute ``sql`` with every variable-length column cut on the server (``_pg_capped_query``).

    psycopg 3 reads through a server-side cursor (bounded memory and transfer), whose DECLARE
    describes the columns without running the query; psycopg 2 describes them with a ``LIMIT 0``
    probe (planned, not run) and fetches the capped query client-side.
    """
    if type(driver).__module__.split(".")[0] == "psycopg" and hasattr(driver, "cursor"):
        from psycopg import sql as pg

        server_side = driver.cursor(name="route_graph_query")
        server_side.execute(sql)  # DECLARE: planned and described, not run yet
        capped = _pg_capped_query(sql, server_side.description or (), pg)
        if capped is not None:
            server_side.close()
            server_side = driver.cursor(name="route_graph_capped")
            server_side.execute(capped)
        return _Batches(server_side)
    if type(driver).__module__.split(".")[0] == "psycopg2":
        from psycopg2 import sql as pg2

        cursor.execute(pg2.SQL("SELECT * FROM ({}) AS route_graph_probe LIMIT 0").format(pg2.SQL(sql)))
        capped = _pg_capped_query(sql, cursor.description or (), pg2)
        cursor.execute(capped if capped is not None else sql)
        return cursor
    cursor.execute(sql)
    return cursor


def _pg_finish(pooled: Any, cursor: Any, explicit: bool, was_autocommit: Any) -> None:
    """Roll back, drop session advisory locks, restore the driver; a broken connection is discarded."""
    try:
        if explicit:
            cursor.execute("ROLLBACK")
            cursor.execute("SELECT pg_catalog.pg_advisory_unlock_all()")
            if not was_autocommit:
                pooled.driver_connection.autocommit = False
        else:
            pooled.rollback()
    except Exception:
        pooled.invalidate()  # never hand a connection in an unknown state back to the pool
    finally:
        close_quietly(cursor, pooled)


#: Seconds a PostgreSQL connection attempt may take (libpq/psycopg ``connect_timeout``) when the
#: engine's URL or connect_args set none: a server that accepts TCP and never answers must not
#: hang opening the database or a run.
PG_CONNECT_TIMEOUT_S = 10
_CONNECT_TIMEOUT_KEY = "_route_graph_connect_timeout"


def bound_connect_timeout(engine: sqlalchemy.Engine, seconds: int = PG_CONNECT_TIMEOUT_S) -> None:
    """Give a PostgreSQL (psycopg/psycopg2) engine a connect timeout unless it has one; idempotent.

    A listener adds ``connect_timeout`` to the driver's connect arguments only where the user's URL
    and ``connect_args`` set none, so an explicit choice is kept. Other engines are left alone.
    """
    if engine.dialect.name != "postgresql" or engine.dialect.driver not in ("psycopg", "psycopg2"):
        return
    if getattr(engine, _CONNECT_TIMEOUT_KEY, False):
        return

    def add_timeout(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        cparams.setdefault("connect_timeout", seconds)

    sqlalchemy.event.listen(engine, "do_connect", add_timeout)
    setattr(engine, _CONNECT_TIMEOUT_KEY, True)


def search_path_statement(schema: str) -> str:
    """``schema`` first where bare names resolve, ``public`` after it (extensions installed there)."""
    return f"SET search_path TO {quote_identifier(schema, 'postgres')}, public"


DIALECT = Dialect(
    names=("postgresql",),
    sqlglot="postgres",
    run=run,
    interrupts=False,
    driver_hint="pip install psycopg2-binary",
    search_path=search_path_statement,
    prepare=bound_connect_timeout,
)
