"""Bounds on untrusted SQL text, checked in linear time before any recursive parser sees it.

sqlglot parses recursively (about 20 Python frames per parenthesis level, so ``SELECT ((((…``
60 levels deep exhausts the default stack), and its work grows with the text. Every place that
parses model SQL (the executor's guard, schema links from SQL, the difficulty h(s, d)) asks
``check_sql_bounds`` first and still catches ``RecursionError`` for nesting written without
parentheses (``NOT NOT NOT …``, nested ``CASE``). Real text-to-SQL queries stay far below both
bounds (Spider/BIRD gold SQL: under 3,000 characters and 10 levels).
"""

from __future__ import annotations

import re

__all__ = ["MAX_MODEL_SQL_CHARS", "MAX_SQL_NESTING", "check_sql_bounds", "nesting_depth", "utf8_safe"]

#: Longest SQL accepted from a model (characters). Independent of ``RouteConfig``: it protects the
#: process, it is not a tuning knob.
MAX_MODEL_SQL_CHARS = 20_000

#: Deepest parenthesis nesting accepted (subqueries, expressions, IN lists all count).
MAX_SQL_NESTING = 32

# Quoted text and comments (whose parentheses do not nest) or one parenthesis. Every
# alternative is anchored on its first character and consumes what it scans, so ``finditer``
# runs in time linear in the text, unterminated quotes and comments included.
_NESTING_TOKENS = re.compile(
    r"'[^']*'?|\"[^\"]*\"?|`[^`]*`?|--[^\n]*|/\*.*?(?:\*/|\Z)|[()]",
    re.DOTALL,
)


def nesting_depth(sql: str) -> int:
    """Deepest parenthesis nesting of ``sql``, ignoring parentheses in strings and comments."""
    depth = deepest = 0
    for match in _NESTING_TOKENS.finditer(sql):
        token = match.group()
        if token == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif token == ")":
            depth = max(0, depth - 1)
    return deepest


def check_sql_bounds(sql: str) -> str | None:
    """None when ``sql`` is small and shallow enough to parse, else a reason the model can act on."""
    if len(sql) > MAX_MODEL_SQL_CHARS:
        return (
            f"The SQL is {len(sql)} characters long; at most {MAX_MODEL_SQL_CHARS} are accepted "
            "(write one shorter query)."
        )
    depth = nesting_depth(sql)
    if depth > MAX_SQL_NESTING:
        return (
            f"The SQL nests parentheses {depth} levels deep; at most {MAX_SQL_NESTING} are accepted "
            "(write a flatter query, e.g. with JOINs or a WITH clause)."
        )
    return None


def utf8_safe(text: str) -> str:
    """``text`` with lone surrogates replaced by "?": orjson and msgpack (checkpointers, Studio)
    refuse them, and JSON escapes such as "\\ud800" in model answers or database values make them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="replace").decode("utf-8")
    return text
