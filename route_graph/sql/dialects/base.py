"""What a dialect file declares: one ``Dialect`` value describing how route-graph runs SQL there."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy

    from route_graph.sql.fetch import Fetched

__all__ = ["Dialect", "RawSchema", "Runner"]

#: Runs one statement that passed the guard: (engine, sql, deadline as ``time.monotonic()``,
#: max_rows) -> the fetched rows; raises ``pool.Rejected`` / ``pool.QueryTimeout`` or the driver's error.
Runner = Callable[["sqlalchemy.Engine", str, float, int], "Fetched"]
#: table -> (columns [(name, type)], primary key [names], foreign keys [(cols, ref_table,
#: ref_cols)], is a view): what introspection reads before ``introspect.build_schema``.
RawSchema = dict[str, tuple[list[tuple[str, str]], list[str], list[tuple[list[str], str, list[Any]]], bool]]


@dataclass(frozen=True)


class Dialect:
    """How route-graph runs model SQL on one kind of database (see ``sql.dialects``)."""

    #: SQLAlchemy dialect names it serves (``engine.dialect.name``), e.g. ``("mysql", "mariadb")``.
    names: tuple[str, ...]
    #: The sqlglot dialect its SQL is parsed and printed in; prompts name it too.
    sqlglot: str
    #: Runs one guarded statement read-only and within its deadline.
    run: Runner
    #: True when ``run`` stops a query at the deadline itself; otherwise a result that arrives
    #: after the deadline (the server's limit was late, or there is none) is reported as a timeout.
    interrupts: bool
    #: False when nothing stops a runaway query on the server: opening such a database warns once.
    bounded: bool = True
    #: The DB-API drivers ``run`` relies on (empty: any); engines with another driver run generically.
    drivers: tuple[str, ...] = ()
    #: What to install when SQLAlchemy cannot load the driver.
    driver_hint: str = ""
    #: Reads the catalog where SQLAlchemy's inspector cannot; None: the inspector.
    introspect: Callable[[sqlalchemy.Engine, str | None], RawSchema] | None = None
    #: ``schema=`` support: the session statement that makes a schema where bare names resolve.
    search_path: Callable[[str], str] | None = None
    #: The schema names, where SQLAlchemy's inspector cannot list them; None: the inspector.
    schema_names: Callable[[sqlalchemy.Engine], list[str]] | None = None
    #: Called once for every engine opened on this dialect (e.g. a connect timeout).
    prepare: Callable[[sqlalchemy.Engine], None] | None = None
