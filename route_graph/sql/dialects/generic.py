"""Any other SQLAlchemy database (SQL Server, ...): best effort, a transaction that is always rolled back.

No server-side timeout is set: a runaway query is reported as a timeout when it returns, but it is
not interrupted, and opening such a database logs a warning saying so (``sql.database``).
"""

from __future__ import annotations

import sqlalchemy

from route_graph.sql.dialects.base import Dialect
from route_graph.sql.fetch import Fetched, fetch_rows
from route_graph.sql.pool import checkout

__all__ = ["DIALECT", "DRIVER_HINTS", "SQLGLOT_NAMES", "run"]

#: sqlglot names of databases without a dialect file here, where they differ from SQLAlchemy's.
SQLGLOT_NAMES = {"mssql": "tsql"}
#: Missing driver -> what to install, for databases without a dialect file here.
DRIVER_HINTS = {"mssql": "pip install pyodbc"}


def run(engine: sqlalchemy.Engine, sql: str, deadline: float, max_rows: int) -> Fetched:
    """Best effort for other server databases (SQL Server, ...): a rolled-back transaction.

    No server-side timeout is set here: a runaway query is reported as a timeout when it returns,
    but it is not interrupted (see README, Safety).
    """
    pooled = checkout(engine, deadline)
    try:
        cursor = pooled.cursor()
        try:
            cursor.execute(sql)
            return fetch_rows(cursor, max_rows)
        finally:
            cursor.close()
    finally:
        try:
            pooled.rollback()
        finally:
            pooled.close()


DIALECT = Dialect(names=(), sqlglot="", run=run, interrupts=False, bounded=False)
