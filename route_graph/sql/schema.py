"""The schema as plain values: tables, columns, keys; and how to quote a name in a dialect.

Pure data (no connection, no I/O), so linking, repairs, rendering and training can all use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import exp

__all__ = ["Column", "ForeignKey", "Schema", "Table", "quote_identifier"]


@dataclass(frozen=True)


class Column:
    """One column; ``type`` is the declared type as text ("" when the database declares none)."""

    name: str
    type: str
    primary_key: bool = False


@dataclass(frozen=True)


class ForeignKey:
    """``column`` of the owning table references ``ref_table.ref_column`` (one pair per key part)."""

    column: str
    ref_table: str
    ref_column: str


@dataclass(frozen=True)


class Table:
    """A table (or a view: ``is_view``, no keys) with its columns in database order.

    Prompts render a view exactly like a table: the model only needs to know what it can read.
    """

    name: str
    columns: tuple[Column, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    is_view: bool = False

    def column(self, name: str) -> Column | None:
        """The column called ``name``, compared case-insensitively (SQL identifiers are)."""
        wanted = name.lower()
        return next((c for c in self.columns if c.name.lower() == wanted), None)


@dataclass(frozen=True)


class Schema:
    """The tables of a database (or of a schema-linked subset of it), in schema order.

    Schema order is creation order for SQLite and DuckDB (as in Spider's ``tables.json``) and
    the inspector's order elsewhere.
    """

    tables: tuple[Table, ...]

    def table(self, name: str) -> Table | None:
        """The table called ``name``, compared case-insensitively."""
        wanted = name.lower()
        return next((t for t in self.tables if t.name.lower() == wanted), None)

    def restrict(self, links: dict[str, list[str]]) -> Schema:
        """The sub-schema of the linked tables/columns, in schema order, keys kept connected.

        Each kept table keeps its primary-key columns and the foreign-key columns that connect it
        to another kept table (both ends); a foreign key is kept only when both of its tables
        are. A self-referencing key is kept only when both its columns are linked anyway, so it
        never adds columns. Unknown names are ignored; names may be in any case.
        """
        wanted: dict[str, set[str]] = {}
        for table_name, columns in links.items():
            wanted.setdefault(str(table_name).lower(), set()).update(
                str(c).lower() for c in (columns or ())
            )
        kept = [t for t in self.tables if t.name.lower() in wanted]
        kept_names = {t.name.lower() for t in kept}
        keep_cols = {
            t.name.lower(): wanted[t.name.lower()] | {c.name.lower() for c in t.columns if c.primary_key}
            for t in kept
        }
        for t in kept:
            for fk in t.foreign_keys:
                ref = fk.ref_table.lower()
                if ref in kept_names and ref != t.name.lower():
                    keep_cols[t.name.lower()].add(fk.column.lower())
                    keep_cols[ref].add(fk.ref_column.lower())
        out = []
        for t in kept:
            cols = keep_cols[t.name.lower()]
            fks = tuple(
                fk
                for fk in t.foreign_keys
                if fk.ref_table.lower() in kept_names
                and fk.column.lower() in cols
                and fk.ref_column.lower() in keep_cols[fk.ref_table.lower()]
            )
            out.append(Table(t.name, tuple(c for c in t.columns if c.name.lower() in cols), fks, t.is_view))
        return Schema(tuple(out))


# Words that cannot be used bare as a name: SQLite's reserved words (measured: those SQLite
# refuses as unquoted table/column names), join words, and the core of ANSI SQL. Dialects with a
# list of their own in sqlglot (DuckDB, MySQL, ...) add it.
_RESERVED = frozenset(
    ["add", "all", "alter", "and", "as", "asc", "autoincrement", "between", "by", "case", "cast", "check", "collate", "commit", "constraint", "create", "cross", "current_date", "current_time", "current_timestamp", "default", "deferrable", "delete", "desc", "distinct", "drop", "else", "escape", "except", "exists", "foreign", "from", "full", "glob", "group", "having", "in", "index", "inner", "insert", "intersect", "into", "is", "isnull", "join", "left", "like", "limit", "match", "natural", "not", "nothing", "notnull", "null", "offset", "on", "or", "order", "outer", "primary", "raise", "recursive", "references", "regexp", "returning", "right", "select", "set", "table", "then", "to", "transaction", "union", "unique", "update", "using", "values", "when", "where", "window", "with"]
)


@lru_cache(maxsize=8192)


def quote_identifier(name: str, dialect: str = "sqlite") -> str:
    """``name`` as it must be written in ``dialect``: bare when that is safe, quoted otherwise.

    Quoted when it has characters other than letters, digits and ``_``, is a reserved word, or
    would be case-folded by the dialect (e.g. ``FacID`` in PostgreSQL).
    """
    d = sqlglot.Dialect.get_or_raise(dialect)
    reserved = _RESERVED | getattr(d.generator_class, "RESERVED_KEYWORDS", frozenset())
    if (
        re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)
        and name.lower() not in reserved
        and not d.case_sensitive(name)
    ):
        return name
    return exp.to_identifier(name, quoted=True).sql(dialect=d)

