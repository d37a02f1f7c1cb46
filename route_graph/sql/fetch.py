"""Rows read from a cursor within fixed bounds, whatever the query returns.

Rows are fetched one at a time, a longer string/blob cell keeps only its first
``MAX_CELL_CHARS`` characters/bytes (``ExecutionResult.cells_truncated`` counts them), and fetching
stops once ``MAX_RESULT_CHARS`` are held (``truncated``, as when ``max_rows`` is hit). Every
dialect's runner ends in ``fetch_rows``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from route_graph.sql.pool import Rejected

__all__ = ["MAX_CELL_CHARS", "MAX_RESULT_CHARS", "Fetched", "fetch_rows"]

#: A longer string (characters) or blob (bytes) in a result keeps only this much: result cells
#: feed prompts (which show 60 characters) and graph state, never megabytes.
MAX_CELL_CHARS = 10_000
#: Fetching stops once the cells held total more than this many characters/bytes (about 10 bytes
#: per number); with ``max_rows`` it bounds a result's memory, however wide its values.
MAX_RESULT_CHARS = 20_000_000
_MAX_CELL_ITEMS = 1_000  # list/struct values (DuckDB) keep at most this many items
_NUMBER_SIZE = 10


@dataclass


class Fetched:
    """What ``fetch_rows`` read: at most ``max_rows`` capped rows, and whether the query had more."""

    columns: list[str]
    rows: list[tuple]
    more: bool
    cells_truncated: int


def _cap_cell(value: Any) -> tuple[Any, int, int]:
    """(value cut to MAX_CELL_CHARS characters/bytes or _MAX_CELL_ITEMS items, cells cut, size)."""
    if isinstance(value, str):
        if len(value) > MAX_CELL_CHARS:
            return value[:MAX_CELL_CHARS], 1, MAX_CELL_CHARS
        return value, 0, len(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) > MAX_CELL_CHARS:
            return bytes(value[:MAX_CELL_CHARS]), 1, MAX_CELL_CHARS
        return bytes(value), 0, len(value)
    if isinstance(value, dict):  # DuckDB STRUCT/MAP values
        pairs = [(key, _cap_cell(item)) for key, item in list(value.items())[:_MAX_CELL_ITEMS]]
        cut = int(len(value) > _MAX_CELL_ITEMS) + sum(c for _, (_, c, _) in pairs)
        return {key: v for key, (v, _, _) in pairs}, cut, sum(n for _, (_, _, n) in pairs)
    if isinstance(value, (list, tuple)):  # DuckDB LIST/ARRAY values
        items = [_cap_cell(item) for item in value[:_MAX_CELL_ITEMS]]
        cut = int(len(value) > _MAX_CELL_ITEMS) + sum(c for _, c, _ in items)
        capped = [v for v, _, _ in items]
        return (tuple(capped) if isinstance(value, tuple) else capped), cut, sum(n for _, _, n in items)
    return value, 0, _NUMBER_SIZE


def fetch_rows(cursor: Any, max_rows: int) -> Fetched:
    """Rows one at a time, each cell capped, until ``max_rows`` or ``MAX_RESULT_CHARS`` is reached.

    One row at a time so that no more than one uncapped row is ever held (a SQLite value can be
    32 MB); DB-API ``fetchone`` costs about a microsecond a row on SQLite and DuckDB.
    """
    if cursor.description is None:  # a no-op statement that slipped past every other guard
        raise Rejected("The statement is not a query (it returns no rows); only SELECT queries may run.")
    columns = [_cap_cell(str(d[0]))[0] for d in cursor.description]
    rows: list[tuple] = []
    held = cut = 0
    while True:
        raw = cursor.fetchone()
        if raw is None:
            return Fetched(columns, rows, False, cut)
        if len(rows) >= max_rows or held > MAX_RESULT_CHARS:
            return Fetched(columns, rows, True, cut)
        row = []
        for value in raw:
            capped, cells_cut, size = _cap_cell(value)
            row.append(capped)
            cut, held = cut + cells_cut, held + size
        rows.append(tuple(row))

