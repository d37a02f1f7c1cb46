"""MySQL and MariaDB: a READ ONLY transaction in a read-only session, the server's limit plus KILL QUERY.

A ``READ ONLY`` transaction in a session made read-only for its duration (DDL's implicit commit
cannot escape it), the server's statement time limit plus ``KILL QUERY`` from a second
connection, always rolled back, user locks released.
"""

from __future__ import annotations

import importlib
import re
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import sqlalchemy

from route_graph.sql.dialects.base import Dialect
from route_graph.sql.fetch import Fetched, fetch_rows
from route_graph.sql.pool import (
    QueryTimeout,
    Rejected,
    checkout,
    close_quietly,
    warn_once,
)

__all__ = ["DIALECT", "run"]

_MY_SESSION_KEY = "route_graph.mysql_session"  # in a pooled connection's info: a _MySession
_MY_KILL_GRACE_S = 0.5  # KILL QUERY from a second connection if the server's limit has not stopped it
_MY_TIMEOUT_CODES = {1969, 3024}  # ER_STATEMENT_TIMEOUT (MariaDB), ER_QUERY_TIMEOUT (MySQL)
# ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION, ER_OPTION_PREVENTS_STATEMENT (--read-only,
# --secure-file-priv), and access denied to a database, table, column or privilege.
_MY_REFUSED_CODES = {1792, 1290, 1044, 1142, 1143, 1227}
_MY_POWERFUL_GRANT = re.compile(r"^GRANT (.+?) ON \*\.\* TO", re.IGNORECASE)
_MY_POWERFUL_PRIVILEGES = re.compile(r"\b(ALL PRIVILEGES|FILE|SUPER)\b", re.IGNORECASE)
_WARNED_MY_PRIVILEGED: weakref.WeakSet[sqlalchemy.Engine] = weakref.WeakSet()


@dataclass(frozen=True)


class _MySession:
    """What ``run`` needs to know of one pooled connection (asked once, at first use)."""

    connection_id: int  # CONNECTION_ID(), for KILL QUERY
    read_only_var: str  # tx_read_only / transaction_read_only
    read_only_was: int
    limit_var: str | None  # max_statement_time (MariaDB 10.1+, s) / max_execution_time (MySQL 5.7.8+, ms)
    limit_was: Any
    release_locks: bool  # RELEASE_ALL_LOCKS() exists (MySQL 5.7.5+, MariaDB 10.5.2+)
    privileged: bool  # global ALL/FILE/SUPER: file functions and SET GLOBAL would run

    def limit(self, seconds: float) -> str:
        if self.limit_var == "max_statement_time":
            return f"{max(0.001, seconds):.3f}"
        return str(max(1, int(seconds * 1000)))


def _my_version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text.split("-")[0])[:3])


def _my_session(cursor: Any, info: dict[Any, Any]) -> _MySession:
    """Which server this is (``SELECT VERSION()``) and its session settings, once per connection."""
    known = info.get(_MY_SESSION_KEY)
    if known is not None:
        return known
    cursor.execute("SELECT VERSION(), CONNECTION_ID()")
    text, connection_id = cursor.fetchone()
    version, mariadb = _my_version(str(text)), "mariadb" in str(text).lower()
    if mariadb:
        read_only_var = "transaction_read_only" if version >= (11, 1) else "tx_read_only"
        limit_var = "max_statement_time" if version >= (10, 1) else None
        release_locks = version >= (10, 5, 2)
    else:
        read_only_var = "transaction_read_only" if version >= (5, 7, 20) else "tx_read_only"
        limit_var = "max_execution_time" if version >= (5, 7, 8) else None
        release_locks = version >= (5, 7, 5)
    cursor.execute(f"SELECT @@SESSION.{read_only_var}, " + (f"@@SESSION.{limit_var}" if limit_var else "NULL"))
    read_only_was, limit_was = cursor.fetchone()
    try:
        cursor.execute("SHOW GRANTS")
        grants = [str(row[0]) for row in cursor.fetchall()]
        privileged = any(
            (m := _MY_POWERFUL_GRANT.match(g)) and _MY_POWERFUL_PRIVILEGES.search(m.group(1)) for g in grants
        )
    except Exception:  # cannot tell: say so rather than stay silent
        privileged = True
    known = info[_MY_SESSION_KEY] = _MySession(
        int(connection_id), read_only_var, int(read_only_was), limit_var, limit_was, release_locks, privileged
    )
    return known


def _warn_privileged_once(engine: sqlalchemy.Engine) -> None:
    warn_once(
        _WARNED_MY_PRIVILEGED,
        engine,
        "route-graph is connected to MySQL/MariaDB %s as a user with global ALL, FILE or SUPER "
        "privileges. Model SQL runs in a read-only transaction with a statement time limit, but "
        "file access (INTO OUTFILE, LOAD_FILE), SET GLOBAL, FLUSH and KILL are refused only by "
        "the SQL check; connect as a user with SELECT privileges only (docs/databases.md).",
        engine.url.render_as_string(hide_password=True),
    )


def _my_error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)  # mysql-connector, mariadb; pymysql/mysqlclient: args[0]
    if not isinstance(code, int):
        args = getattr(exc, "args", ())
        code = args[0] if args and isinstance(args[0], int) else None
    return code


def _my_kill(engine: sqlalchemy.Engine, connection_id: int) -> None:
    """``KILL QUERY`` from a second connection, outside the engine's pool (it may be full)."""
    pool = engine.pool.recreate()  # same connect arguments and listeners, its own connections
    try:
        conn = pool.connect()
        try:
            cursor = conn.cursor()
            cursor.execute(f"KILL QUERY {int(connection_id)}")
            cursor.close()
        finally:
            conn.close()
    except Exception:  # the server's own limit, or the rollback's failure, still ends it
        pass
    finally:
        pool.dispose()


def _my_cursor(driver: Any, pooled: Any) -> Any:
    """An unbuffered cursor where the driver has one (pymysql, mysqlclient): rows arrive as they
    are fetched, so the row and size caps bound memory; else the driver's default cursor."""
    package = type(driver).__module__.split(".")[0]
    if package in ("pymysql", "MySQLdb"):
        return driver.cursor(importlib.import_module(f"{package}.cursors").SSCursor)
    return pooled.cursor()


def run(engine: sqlalchemy.Engine, sql: str, deadline: float, max_rows: int) -> Fetched:
    """Run ``sql`` read-only and time-limited on MySQL or MariaDB, then roll back.

    ``START TRANSACTION READ ONLY`` alone is not enough: a DDL statement commits implicitly and
    would run outside it, so the session's transactions are made read-only too (restored after).
    The server stops the query at the deadline (MariaDB ``max_statement_time``, MySQL
    ``max_execution_time``); ``KILL QUERY`` from a second connection backs it up, and stops a
    result cut at ``max_rows`` instead of draining it. Always rolled back; user locks released.
    """
    pooled = checkout(engine, deadline)
    setup = pooled.cursor()
    try:
        session = _my_session(setup, pooled.info)
    except Exception:
        setup.close()
        pooled.invalidate()
        pooled.close()
        raise
    if session.privileged:
        _warn_privileged_once(engine)
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def stop(fired: bool) -> None:
        with lock:  # held while killing: the connection goes back to the pool only after
            if state["done"]:
                return
            state["fired"] = state["fired"] or fired
            _my_kill(engine, session.connection_id)

    timer = threading.Timer(max(0.0, deadline - time.monotonic()) + _MY_KILL_GRACE_S, stop, (True,))
    timer.daemon = True
    cursor = None
    try:
        settings = [f"SESSION {session.read_only_var} = 1"]
        if session.limit_var:
            settings.append(f"SESSION {session.limit_var} = {session.limit(deadline - time.monotonic())}")
        setup.execute("SET " + ", ".join(settings))
        setup.execute("START TRANSACTION READ ONLY")
        timer.start()
        cursor = _my_cursor(pooled.driver_connection, pooled)
        cursor.execute(sql)
        fetched = fetch_rows(cursor, max_rows)
        if fetched.more:
            stop(False)  # the rest is not wanted: end it on the server rather than read it all
        return fetched
    except Exception as exc:
        code = _my_error_code(exc)
        if state["fired"] or code in _MY_TIMEOUT_CODES:
            raise QueryTimeout from exc
        if code in _MY_REFUSED_CODES:
            message = str(getattr(exc, "args", ("",))[-1]) or type(exc).__name__
            raise Rejected(f"Refused by the server: {message}; only read-only SELECT queries may run.") from exc
        raise
    finally:
        with lock:
            state["done"] = True
            timer.cancel()
        _my_finish(pooled, setup, cursor, session)


def _my_finish(pooled: Any, setup: Any, cursor: Any, session: _MySession) -> None:
    """Roll back, release user locks, restore the session; a broken connection is discarded."""
    try:
        if cursor is not None:
            try:
                cursor.close()  # an unbuffered cursor reads what is left (nothing, once killed)
            except Exception:
                pass
        setup.execute("ROLLBACK")
        if session.release_locks:
            setup.execute("DO RELEASE_ALL_LOCKS()")
        restore = [f"SESSION {session.read_only_var} = {session.read_only_was}"]
        if session.limit_var:
            restore.append(f"SESSION {session.limit_var} = {session.limit_was}")
        setup.execute("SET " + ", ".join(restore))
    except Exception:
        pooled.invalidate()  # never hand a connection in an unknown state back to the pool
    finally:
        close_quietly(setup, pooled)


DIALECT = Dialect(
    names=("mysql", "mariadb"), sqlglot="mysql", run=run, interrupts=False, driver_hint="pip install pymysql"
)
