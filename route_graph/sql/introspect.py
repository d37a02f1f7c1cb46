"""Reading a database's catalog into a ``Schema``: tables and views, columns, keys, in schema order.

Dialects whose SQLAlchemy inspector is incomplete read their own catalog (``Dialect.introspect``);
the rest go through ``introspect_sqlalchemy``. ``filter_tables`` applies ``include_tables`` /
``ignore_tables``.
"""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Iterable
from typing import Any

import sqlalchemy

from route_graph.errors import DatabaseError
from route_graph.sql.dialects.base import RawSchema
from route_graph.sql.schema import Column, ForeignKey, Schema, Table

__all__ = ["RawSchema", "build_schema", "dbapi_error", "filter_tables", "introspect_sqlalchemy", "name_list"]


def introspect_sqlalchemy(engine: sqlalchemy.Engine, schema: str | None = None) -> RawSchema:
    """The catalog through SQLAlchemy's inspector (materialized views too on PostgreSQL)."""
    raw: RawSchema = {}
    with warnings.catch_warnings():
        # Spider-style files have types such as INTEGER(11) that SQLAlchemy warns about.
        warnings.simplefilter("ignore", sqlalchemy.exc.SAWarning)
        inspector = sqlalchemy.inspect(engine)
        tables = inspector.get_table_names(schema=schema)
        views = list(inspector.get_view_names(schema=schema))
        if engine.dialect.name == "postgresql":
            views += [v for v in inspector.get_materialized_view_names(schema=schema) if v not in views]
        views = [v for v in views if v not in tables]
        for table in _creation_order(engine, [*tables, *views]):
            columns = [
                (c["name"], _type_text(c["type"], engine.dialect))
                for c in inspector.get_columns(table, schema=schema)
            ]
            if table in views:  # a view has no keys of its own
                raw[table] = (columns, [], [], True)
                continue
            pk = inspector.get_pk_constraint(table, schema=schema).get("constrained_columns") or []
            fks = [
                (fk["constrained_columns"], fk["referred_table"], fk["referred_columns"])
                for fk in inspector.get_foreign_keys(table, schema=schema)
                if fk.get("referred_schema") in (None, schema)  # keys into another schema: not shown
            ]
            raw[table] = (columns, list(pk), fks, False)
    return raw


def _creation_order(engine: sqlalchemy.Engine, names: list[str]) -> list[str]:
    """SQLite: tables and views in creation order (Spider's "schema order"); else as given."""
    if engine.dialect.name != "sqlite":
        return names
    with engine.connect() as conn:
        created = conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
        ).scalars()
        rank = {name: i for i, name in enumerate(created)}
    return sorted(names, key=lambda n: rank.get(n, len(rank)))


def dbapi_error(engine: sqlalchemy.Engine) -> type[Exception]:
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


def build_schema(raw: RawSchema) -> Schema:
    """Frozen schema with foreign keys resolved to the real spelling of tables and columns."""
    by_lower = {t.lower(): t for t in raw}
    tables = []
    for name, (columns, pk, fks, is_view) in raw.items():
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
        tables.append(Table(name, cols, tuple(keys), is_view))
    return Schema(tuple(tables))


def name_list(what: str, names: Iterable[str] | None) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, str):  # "orders" would otherwise be read as the names o, r, d, ...
        raise TypeError(f"{what} must be a list of table names, not the string {names!r}")
    return tuple(str(n) for n in names)


def filter_tables(
    raw: RawSchema, include: tuple[str, ...] | None, ignore: tuple[str, ...] | None, where: str
) -> RawSchema:
    """``raw`` narrowed to ``include`` minus ``ignore``; names it does not have are an error."""
    by_lower = {t.lower(): t for t in raw}
    for what, names in (("include_tables", include), ("ignore_tables", ignore)):
        unknown = [n for n in names or () if n.lower() not in by_lower]
        if unknown:
            raise DatabaseError(
                f"{what} names {', '.join(map(repr, unknown))}, not a table or view of {where}; "
                f"it has: {', '.join(raw)}. Fix the names (case does not matter)."
            )
    keep = set(by_lower) if include is None else {n.lower() for n in include}
    keep -= {n.lower() for n in ignore or ()}
    out = {t: v for t, v in raw.items() if t.lower() in keep}
    if not out:
        raise DatabaseError(
            f"include_tables/ignore_tables leave no table of {where}; keep at least one."
        )
    return out
