"""SQL text helpers for targets: whitespace normalisation and clause boundaries (CW prefixes).

Spider's gold SQL is written with stray double spaces (``age  >  56``); training on it as is
teaches the model to waste tokens on them, so targets collapse whitespace outside quotes. CW
prefixes cut the gold text (not a re-printed version) before a clause keyword, so the completion
the model learns is the gold itself.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

__all__ = ["clause_boundaries", "cut_prefix", "normalize_sql"]

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
