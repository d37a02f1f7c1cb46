"""``schema=`` (PostgreSQL, DuckDB): read one non-default schema, and make bare names resolve there.

Its connections get ``search_path`` set to it, so the unqualified names the prompts show are the
names SQL reaches (see docs/databases.md).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy

from route_graph.errors import DatabaseError
from route_graph.sql.dialects import dialect_named
from route_graph.sql.introspect import dbapi_error

__all__ = ["check_schema_exists", "check_schema_name", "pin_search_path"]

_PINNED_SCHEMA = "_route_graph_schema"  # on an engine: the schema its search_path is pinned to
_SEARCH_PATH_KEY = "route_graph.search_path"  # in a pooled connection's info: the statement run


def check_schema_name(engine: sqlalchemy.Engine, schema: str | None) -> str | None:
    """``schema`` if ``engine``'s dialect can read one (it has a search path), else a ``DatabaseError``."""
    if schema is None:
        return None
    if not isinstance(schema, str) or not schema.strip():
        raise DatabaseError(f"schema must be a non-empty schema name, got {schema!r}.")
    if dialect_named(engine.dialect.name).search_path is None:
        raise DatabaseError(
            f"schema={schema!r} is supported on PostgreSQL and DuckDB, not {engine.dialect.name}: "
            "leave it out and connect to the database that holds the tables instead."
        )
    return schema


def pin_search_path(engine: sqlalchemy.Engine, schema: str) -> None:
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
    statement = dialect_named(engine.dialect.name).search_path(schema)  # type: ignore[misc]

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


def check_schema_exists(engine: sqlalchemy.Engine, schema: str, name: str) -> None:
    """Fail before the engine is touched: DuckDB refuses a search_path naming a missing schema
    (every later checkout of the user's engine would fail); PostgreSQL silently ignores one."""
    try:
        listed = dialect_named(engine.dialect.name).schema_names
        names = listed(engine) if listed is not None else sqlalchemy.inspect(engine).get_schema_names()
    except (sqlalchemy.exc.SQLAlchemyError, dbapi_error(engine), OSError) as exc:
        orig = getattr(exc, "orig", None) or exc
        raise DatabaseError(f"Cannot read the schemas of {name}: {orig}. Check the URL.") from exc
    if schema not in names:
        shown = [n for n in names if n != "information_schema" and not n.startswith("pg_")]
        raise DatabaseError(
            f"No schema {schema!r} in {name}; its schemas are: {', '.join(shown) or 'none readable'} "
            "(schema names are case-sensitive)."
        )
