"""Deterministic SQL repairs, tried before a model is asked: cheap, exact, and never a guess.

The commonest failure of small models on joins is a column qualified with the wrong alias
(``T2.name`` where ``name`` lives in ``T1``'s table); the database names it in its error
("no such column: T2.name"). When exactly one table joined in that query (one alias of the
column's scope) has the column, the qualifier can only mean that table: the column is
re-qualified on sqlglot's tree, never by text substitution. Anything ambiguous (no owner, or two
aliases that have the column, as in a self-join) is left to the model. The caller keeps the
result only if it executes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import traverse_scope

from route_graph.database import Schema
from route_graph.linking import parse_bounded

__all__ = ["MissingColumn", "missing_column", "requalify_column"]

_NAME = r"[\"`\[]?([A-Za-z_][\w ]*?)[\"`\]]?"
# How engines name a qualified column that does not exist (SQLite, DuckDB, PostgreSQL, MySQL).
_MISSING_COLUMN = [
    re.compile(rf"no such column:\s*{_NAME}\.{_NAME}(?:\s|$|,)", re.IGNORECASE),
    re.compile(r'Table "([^"]+)" does not have a column named "([^"]+)"', re.IGNORECASE),
    re.compile(rf"column\s+{_NAME}\.{_NAME}\s+does not exist", re.IGNORECASE),
    re.compile(r"Unknown column '([^'.]+)\.([^']+)'", re.IGNORECASE),
]
_MAX_ERROR_CHARS = 1_000


@dataclass(frozen=True)
class MissingColumn:
    """``qualifier.column`` that an execution error says does not exist."""

    qualifier: str
    column: str


def missing_column(error: str | None) -> MissingColumn | None:
    """The wrongly qualified column an execution error names, or None for any other error."""
    text = (error or "")[:_MAX_ERROR_CHARS]
    for pattern in _MISSING_COLUMN:
        match = pattern.search(text + " ")
        if match:
            return MissingColumn(qualifier=match.group(1).strip(), column=match.group(2).strip())
    return None


def requalify_column(sql: str, error: str | None, schema: Schema, dialect: str = "sqlite") -> str | None:
    """``sql`` with the column the error names re-qualified to the only joined table that has it.

    Returns None when the error is not a missing qualified column, the SQL does not parse, or in
    some scope that uses the column not exactly one of its tables has it. Every occurrence of
    ``qualifier.column`` is re-qualified (each within its own scope).
    """
    missing = missing_column(error)
    if missing is None:
        return None
    tree = parse_bounded(sql, dialect)
    if tree is None:
        return None
    try:
        changed = _requalify(tree, missing, schema)
        return tree.sql(dialect=dialect) if changed else None
    except (SqlglotError, ValueError, KeyError, RecursionError):
        return None


def _requalify(tree: exp.Expression, missing: MissingColumn, schema: Schema) -> bool:
    qualifier, column = missing.qualifier.lower(), missing.column.lower()
    changed = False
    for scope in traverse_scope(tree):
        wrong = [
            c for c in scope.columns
            if c.table and c.table.lower() == qualifier and c.name.lower() == column
        ]
        if not wrong:
            continue
        owners = [
            alias for alias, source in scope.sources.items()
            if isinstance(source, exp.Table)
            and (table := schema.table(source.name)) is not None
            and table.column(missing.column) is not None
        ]
        if len(owners) != 1 or owners[0].lower() == qualifier:
            return False  # ambiguous, unknown, or the column is there after all: not ours to guess
        for node in wrong:
            node.set("table", exp.to_identifier(owners[0]))
        changed = True
    return changed
