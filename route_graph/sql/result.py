"""What one execution did, and how its result is shown to the model.

``ExecutionResult`` is the one answer every execution gives (bad SQL never raises: rejections,
errors and timeouts come back with ``ok=False``, exactly the feedback noise correction needs);
``to_dict`` is JSON- and msgpack-safe (LangGraph checkpoints, Studio, orjson).
``summarize_result`` is the bounded execution feedback the prompts show, ``format_value`` one
cell as prompt text.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from route_graph.sql.fetch import MAX_CELL_CHARS
from route_graph.sql_bounds import utf8_safe

__all__ = ["ErrorKind", "ExecutionResult", "format_value", "short_error", "summarize_result"]

#: Why an execution failed: the guard or the connection refused it, the deadline passed, or the database raised.
ErrorKind = Literal["rejected", "timeout", "error"]

_MAX_ERROR_CHARS = 500
_SUMMARY_MAX_COLUMNS = 20

_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# msgpack (LangGraph checkpoints) and orjson hold 64-bit integers; larger ones become text.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass


class ExecutionResult:
    """What one execution did: the rows (at most ``max_rows``) or why there are none."""

    sql: str
    ok: bool
    columns: list[str] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    row_count: int = 0  # rows fetched (<= max_rows)
    truncated: bool = False  # the query had more rows than were fetched (max_rows or MAX_RESULT_CHARS)
    cells_truncated: int = 0  # cells cut to MAX_CELL_CHARS characters/bytes (or _MAX_CELL_ITEMS items)
    error: str | None = None
    error_kind: ErrorKind | None = None
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: what LangGraph's checkpointers and orjson can store.

        Rows become lists; bytes hex text, dates ISO text, Decimals floats; NaN/inf, integers
        beyond 64 bits and unknown types text; lone surrogates in text are replaced.
        """
        return {
            "sql": utf8_safe(self.sql),
            "ok": self.ok,
            "columns": [utf8_safe(str(c)) for c in self.columns],
            "rows": [[_json_value(v) for v in row] for row in self.rows],
            "row_count": self.row_count,
            "truncated": self.truncated,
            "cells_truncated": self.cells_truncated,
            "error": None if self.error is None else utf8_safe(self.error),
            "error_kind": self.error_kind,
            "elapsed_s": self.elapsed_s,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExecutionResult:
        """Inverse of ``to_dict`` (values keep their JSON types; rows become tuples)."""
        rows = [tuple(r) for r in d.get("rows", ())]
        return cls(
            sql=d["sql"],
            ok=bool(d["ok"]),
            columns=list(d.get("columns", ())),
            rows=rows,
            row_count=int(d.get("row_count", len(rows))),
            truncated=bool(d.get("truncated", False)),
            cells_truncated=int(d.get("cells_truncated", 0)),
            error=d.get("error"),
            error_kind=d.get("error_kind"),
            elapsed_s=float(d.get("elapsed_s", 0.0)),
        )


def short_error(message: str, limit: int = _MAX_ERROR_CHARS) -> str:
    """An error message for prompts and results: colour codes removed, cut to ``limit`` characters."""
    text = _ANSI.sub("", message).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"

# --------------------------------------------------------------------------- presentation


def format_value(value: Any, max_chars: int = 60) -> str:
    """One cell as prompt text: NULL for None, one line, cut to ``max_chars`` with "…" (<= 0: no cut)."""
    if value is None:
        text = "NULL"
    elif isinstance(value, (bytes, bytearray, memoryview)):
        text = "x'" + bytes(value).hex() + "'"
    else:
        text = str(value)
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")
    if max_chars > 0 and len(text) > max_chars:
        text = text[:max_chars] + "…"
    return text


def summarize_result(result: ExecutionResult, *, max_rows: int = 5, value_chars: int = 60) -> str:
    """The execution feedback shown to the model: the error, or a bounded description of the rows."""
    if not result.ok:
        return f"Execution error: {short_error(result.error or 'unknown error')}"
    columns = list(result.columns)
    shown_cols = columns[:_SUMMARY_MAX_COLUMNS]
    more_cols = len(columns) - len(shown_cols)
    lines = [
        "Columns: "
        + ", ".join(format_value(c, value_chars) for c in shown_cols)
        + (f", … (+{more_cols} more columns)" if more_cols else "")
    ]
    if result.truncated:
        lines.append(f"Rows: more than {result.row_count} (only the first {result.row_count} were fetched)")
    else:
        lines.append(f"Rows: {result.row_count}")
    if not result.rows:
        lines.append("The result is empty.")
        return "\n".join(lines)
    shown = result.rows[: max(0, max_rows)]
    if shown:
        lines.append(f"First {len(shown)} rows:" if len(shown) < len(result.rows) else "All rows:")
        lines.append("\t".join(format_value(c, value_chars) for c in shown_cols))
        lines.extend("\t".join(format_value(v, value_chars) for v in row[: len(shown_cols)]) for row in shown)
    for i, name in enumerate(columns):
        if all(i < len(row) and row[i] is None for row in result.rows):
            lines.append(f"Column {format_value(name, value_chars)} is NULL in every row.")
    if result.cells_truncated:
        lines.append(
            f"{result.cells_truncated} long values were cut to their first {MAX_CELL_CHARS} characters."
        )
    return "\n".join(lines)


def _json_value(value: Any) -> Any:
    """One result value as None, bool, 64-bit int, finite float, str, list or dict."""
    if value is None or isinstance(value, bool):
        return bool(value) if value is not None else None
    if isinstance(value, int):
        number = int(value)
        return number if _INT64_MIN <= number <= _INT64_MAX else str(number)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return utf8_safe(str(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        number = float(value)
        return number if math.isfinite(number) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (_dt.date, _dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {utf8_safe(str(k)): _json_value(v) for k, v in value.items()}
    return utf8_safe(str(value))  # UUID, timedelta, intervals, driver types
