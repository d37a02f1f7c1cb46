"""Connections for one execution: checked out within the query's deadline, always given back.

The timeout covers the wait for a pooled connection too: under load, a query that cannot get a
connection before its deadline fails as a timeout instead of running late (``checkout``). The
exceptions here are how a dialect's runner tells ``execute_sql`` what happened.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import sqlalchemy
from sqlalchemy.pool import QueuePool, SingletonThreadPool

__all__ = ["NoConnection", "QueryTimeout", "Rejected", "checkout", "close_quietly", "pool_is_full", "warn_once"]

_LOG = logging.getLogger("route_graph")


class Rejected(Exception):
    """The connection-level guard refused the statement."""


class QueryTimeout(Exception):
    """The deadline passed and the query was interrupted."""


class NoConnection(QueryTimeout):
    """The deadline passed while waiting for a pooled connection: the query never ran."""


def _close_late(future: Future) -> None:
    if not future.cancelled() and future.exception() is None and future.result() is not None:
        future.result().close()


def _checkout_threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=64, thread_name_prefix="route-graph-checkout")


#: Threads that wait on a QueuePool for callers (see ``_checkout``); idle ones are reused (a new
#: thread per query would cost about 0.5 ms). At exit, one still waiting for a connection that
#: someone holds delays exit by up to the pool's own timeout.
_CHECKOUTS = _checkout_threads()


def _new_checkout_threads_after_fork() -> None:
    global _CHECKOUTS
    _CHECKOUTS = _checkout_threads()  # a forked child has none of the parent's threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_checkout_threads_after_fork)


def checkout(engine: sqlalchemy.Engine, deadline: float) -> Any:
    """A pooled DB-API connection, or ``NoConnection`` if none is free before ``deadline``.

    Only a ``QueuePool`` makes callers wait for a connection, and it waits its own ``timeout``
    (30 s by default), not the query's. SQLAlchemy has no per-call timeout, so a helper thread
    checks out while this one waits until the deadline (a reused thread: microseconds); a connection
    that arrives after the caller gave up goes straight back to the pool. Server databases are
    checked out the same way whatever their pool: opening a connection to a server that accepts
    TCP and never answers would otherwise hang the caller. SQLite/DuckDB engines with other pools
    (SingletonThreadPool's per-thread connections, NullPool, StaticPool) never wait for another
    query and are checked out here, in the caller's thread, as before.
    """
    server = engine.dialect.name not in ("sqlite", "duckdb")
    if not isinstance(engine.pool, QueuePool) and not (server and not isinstance(engine.pool, SingletonThreadPool)):
        return engine.raw_connection()
    lock = threading.Lock()
    state = {"abandoned": False}

    def take() -> Any:
        pooled = engine.raw_connection()
        with lock:
            if not state["abandoned"]:
                return pooled
        pooled.close()  # the caller timed out meanwhile
        return None

    future = _CHECKOUTS.submit(take)
    try:
        pooled = future.result(timeout=max(0.0, deadline - time.monotonic()))
    except FutureTimeout:
        with lock:
            state["abandoned"] = True
        if not future.cancel():  # running: a connection taken before the flag was set goes back
            future.add_done_callback(_close_late)
        raise NoConnection from None
    if time.monotonic() >= deadline:
        pooled.close()
        raise QueryTimeout
    return pooled


def pool_is_full(engine: sqlalchemy.Engine) -> bool:
    """True when every connection a QueuePool may open is checked out (busy, not unreachable)."""
    pool = engine.pool
    if not isinstance(pool, QueuePool):
        return False
    overflow = pool._max_overflow  # no public accessor; -1 means unlimited
    return overflow >= 0 and pool.checkedout() >= pool.size() + overflow


def close_quietly(cursor: Any, pooled: Any) -> None:
    """Close the cleanup cursor (a failure there changes nothing) and return the connection."""
    try:
        cursor.close()
    except Exception:
        pass
    pooled.close()


def warn_once(warned: weakref.WeakSet[sqlalchemy.Engine], engine: sqlalchemy.Engine, message: str, *args: Any) -> None:
    """Log ``message`` the first time ``engine`` is seen in ``warned`` (held weakly, not by id)."""
    if engine in warned:
        return
    warned.add(engine)
    _LOG.warning(message, *args)

