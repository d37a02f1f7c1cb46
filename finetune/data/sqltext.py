"""SQL text helpers for targets: whitespace normalisation and clause boundaries (CW prefixes).

Spider's gold SQL is written with stray double spaces (``age  >  56``); training on it as is
teaches the model to waste tokens on them, so targets collapse whitespace outside quotes. CW
prefixes cut the gold text (not a re-printed version) before a clause keyword, so the completion
the model learns is the gold itself.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

__all__ = ["clause_boundaries", "cut_prefix", "normalize_sql", "qualify_with_table_names"]

_QUOTED = re.compile(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\])")

#: Clause keywords a CW prefix may stop before (the keyword itself goes to the completion).
_CLAUSE_TOKENS = {
    TokenType.FROM,
    TokenType.WHERE,
    TokenType.GROUP_BY,
    TokenType.HAVING,
    TokenType.ORDER_BY,
    TokenType.LIMIT,
    TokenType.JOIN,
    TokenType.ON,
    TokenType.UNION,
    TokenType.INTERSECT,
    TokenType.EXCEPT,
}
# Words that belong to a following JOIN ("LEFT OUTER JOIN"): the cut goes before them.
_JOIN_WORDS = {TokenType.LEFT, TokenType.RIGHT, TokenType.INNER, TokenType.OUTER, TokenType.CROSS, TokenType.FULL, TokenType.NATURAL}


def normalize_sql(sql: str) -> str:
    """Collapse whitespace runs (and space before commas) outside quotes; drop trailing ';'."""
    parts = _QUOTED.split(sql.strip())
    out = []
    for i, part in enumerate(parts):
        out.append(part if i % 2 else re.sub(r"\s+,", ",", re.sub(r"\s+", " ", part)))
    text = "".join(out).strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


def clause_boundaries(sql: str, dialect: str = "sqlite") -> list[int]:
    """Character offsets in ``sql`` where a clause starts (after the leading SELECT), ascending."""
    try:
        tokens = sqlglot.Dialect.get_or_raise(dialect).tokenize(sql)
    except (SqlglotError, ValueError):
        return []
    cuts: list[int] = []
    for i, token in enumerate(tokens):
        if token.token_type not in _CLAUSE_TOKENS or i == 0:
            continue
        j = i
        while j > 0 and tokens[j - 1].token_type in _JOIN_WORDS:
            j -= 1
        cuts.append(tokens[j].start)
    return sorted({c for c in cuts if c > 0})


def cut_prefix(sql: str, offset: int) -> str:
    """The gold text before ``offset``, ending in one space (the shape of "SELECT ")."""
    return sql[:offset].rstrip() + " "


def qualify_with_table_names(sql: str, dialect: str = "sqlite") -> str | None:
    """Spider's ``T1``/``T2`` aliases replaced by the table names, where that is unambiguous.

    Why: a model tuned on alias-qualified targets learns the aliases and, with them, to qualify a
    column with the wrong one (the 2026-11-22 tuned model's mis-qualified columns went 8 -> 14).
    ``singer.name`` cannot point at the wrong table the way ``T2.name`` can. Returns the query
    printed by sqlglot, the unchanged text when it has no table alias, or None when aliases are
    needed (a table used twice, an alias reused across subqueries or named like another table)
    or the SQL does not parse. Callers check by execution that the result is unchanged.
    """
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except (SqlglotError, ValueError):
        return None
    if tree is None:
        return None
    tables = list(tree.find_all(exp.Table))
    names = [t.name.lower() for t in tables]
    if len(set(names)) != len(names):
        return None
    alias_of: dict[str, str] = {}
    for table in tables:
        alias = table.alias.lower()
        if not alias:
            continue
        if alias in alias_of or (alias in names and alias != table.name.lower()):
            return None
        alias_of[alias] = table.name
    if not alias_of:
        return sql
    for column in tree.find_all(exp.Column):
        if column.table and column.table.lower() in alias_of:
            column.set("table", exp.to_identifier(alias_of[column.table.lower()]))
    for table in tables:
        table.set("alias", None)
    return tree.sql(dialect=dialect)
