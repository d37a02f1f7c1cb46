"""The forgiving parsers of the models' answers: the SQL, the schema links, the NC verdict, the
rewritten question.

Model output is untrusted and irregular, and may be huge. Every scan here runs in time linear in
the text (no pattern rescans what it failed on), so a megabyte answer costs milliseconds, not
hours. Each parser reads the target completion its task is trained on (``route_graph.prompts``'s
``*_completion``) and the looser answers of untuned models.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass

from route_graph.sql_bounds import utf8_safe

__all__ = ["Verdict", "parse_links", "parse_rewrite", "parse_sql", "parse_verdict"]

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_SQL_START = re.compile(r"\b(SELECT|WITH)\b", re.IGNORECASE)
_DOT_COLUMN = re.compile(r"\.([A-Za-z_]\w*)")
_KEY_LIST = re.compile(r":[ \t]*\[([^\[\]]*)\]")
_TABLE_RUN = re.compile(r"[\w ]*")  # matched on the reversed text before a dot
_TABLE_START = re.compile(r"[A-Za-z_]")
_QUOTE_OR_SEMICOLON = re.compile(r"['\"`;]")
# ast.literal_eval (for Python-dict answers) builds a syntax tree first; a links object is never
# this long, so longer text is only tried as JSON.
_MAX_LITERAL_CHARS = 100_000


def parse_rewrite(text: str, fallback: str) -> str:
    """The standalone question from a rewrite answer; the original follow-up if there is none."""
    for line in text.strip().splitlines():
        line = re.sub(r"^\s*(standalone question|question|rewritten question)\s*:\s*", "", line, flags=re.IGNORECASE)
        line = line.strip().strip('"').strip("'").strip()
        if line:
            return line
    return fallback


def parse_sql(text: str) -> str | None:
    """Extract one SQL query from model text: a ```sql fence, any fence, or bare SQL.

    Returns the query without trailing semicolon, or None when the text holds no query.
    """
    if not text:
        return None
    blocks = [(lang.lower(), body.strip()) for lang, body in _FENCE.findall(text)]
    candidates = [b for lang, b in blocks if lang == "sql" and b]
    candidates += [b for lang, b in blocks if lang != "sql" and b and _SQL_START.search(b)]
    if candidates:
        sql = candidates[0]
    else:
        match = _SQL_START.search(text)
        if not match:
            return None
        sql = text[match.start():]
        # Bare SQL ends at the first blank line.
        sql = re.split(r"\n\s*\n", sql, maxsplit=1)[0]
    sql = sql.strip().strip("`").strip()
    sql = re.sub(r"^(sql|sqlite)\s*\n", "", sql, flags=re.IGNORECASE)
    # Only the first statement counts; the executor rejects the rest anyway.
    sql = _first_statement(sql).strip()
    return sql or None


def _first_statement(sql: str) -> str:
    """Text up to the first semicolon outside quotes (the regex skips everything else at C speed)."""
    quote: str | None = None
    for match in _QUOTE_OR_SEMICOLON.finditer(sql):
        ch = match.group()
        if quote:
            if ch == quote:
                quote = None
        elif ch == ";":
            return sql[: match.start()]
        else:
            quote = ch
    return sql


def parse_links(text: str) -> dict[str, list[str]]:
    """Parse an SL answer into ``{table: [columns]}`` (unvalidated; see ``linking.validate_links``).

    Accepts JSON or Python-dict text, inside or outside code fences, and a ``table.column`` list as
    a last resort. Unparseable text gives ``{}``.
    """
    if not text:
        return {}
    body = text
    fenced = [b for _, b in _FENCE.findall(text) if "{" in b]
    if fenced:
        body = fenced[0]
    start, end = body.find("{"), body.rfind("}")
    if start != -1 and end > start:
        snippet = body[start : end + 1]
        loaders = [json.loads] + ([ast.literal_eval] if len(snippet) <= _MAX_LITERAL_CHARS else [])
        for loader in loaders:
            try:
                value = loader(snippet)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(value, dict):
                return _normalise_links(value)
    listed = _listed_links(text)
    if listed:
        return _normalise_links(listed)
    links: dict[str, list[str]] = {}
    for table, column in _dotted_pairs(text):
        links.setdefault(table, []).append(column)
    return links


def _listed_links(text: str) -> dict[str, list[str]]:
    """``Table: [col, col], ...`` (JSON without its quotes, or cut short), in linear time.

    The MSFT v3 model wrote this after the old bare ``{`` prefill (395 of 400 SL answers were
    unreadable, benchmarks/HISTORY.md); a JSON answer cut at the token limit keeps its complete
    lists this way too. Each table name is read backwards from its ``:``, never past the previous list.
    """
    links: dict[str, list[str]] = {}
    floor = 0
    for match in _KEY_LIST.finditer(text):
        end = match.start()
        while end > floor and text[end - 1] in "\"' \t":
            end -= 1
        start = end
        while start > floor and (text[start - 1].isalnum() or text[start - 1] in "_ "):
            start -= 1
        table = text[start:end].strip()
        floor = match.end()
        columns = [c.strip().strip("\"'`").strip() for c in match.group(1).split(",")]
        if table and (table[0].isalpha() or table[0] == "_"):
            links.setdefault(table, []).extend(c for c in columns if c)
    return links


def _dotted_pairs(text: str) -> list[tuple[str, str]]:
    """``table.column`` pairs in prose, in linear time.

    The table is the run of word characters and spaces just before the dot, from its first
    letter or underscore (``Player Attributes.id`` keeps its space). Each run is scanned once: it
    starts after the previous dot or the previous pair, whichever is later.
    """
    pairs: list[tuple[str, str]] = []
    floor = 0  # no table run reaches back before this position
    for match in _DOT_COLUMN.finditer(text):
        dot = match.start()
        before = text[floor:dot]
        run = before[len(before) - _TABLE_RUN.match(before[::-1]).end() :]
        first = _TABLE_START.search(run)
        if first is not None and run[first.start() :].strip():
            pairs.append((run[first.start() :].strip(), match.group(1)))
            floor = match.end()
        else:
            floor = dot + 1
    return pairs


def _normalise_links(value: dict) -> dict[str, list[str]]:
    links: dict[str, list[str]] = {}
    for table, columns in value.items():
        if isinstance(columns, str):
            columns = [columns]
        elif not isinstance(columns, (list, tuple, set)):
            columns = []
        names = (utf8_safe(str(c)).strip() for c in columns if not isinstance(c, (list, tuple, set, dict)))
        links[utf8_safe(str(table)).strip()] = [name for name in names if name]
    return links


@dataclass(frozen=True)
class Verdict:
    """NC answer: ``correct`` is True/False, or None when the model gave no clear verdict."""

    correct: bool | None
    sql: str | None


# Phrases that hold a negative word yet approve the SQL ("executes without error", "does not
# need changes"): read as approval, and removed before the negative words are looked for.
_APPROVING = re.compile(
    r"\b(?:without (?:any )?errors?|no errors?"
    r"|(?:does not|doesn't|do not|don't|will not|won't) (?:need|require)s?(?: any)?"
    r" (?:changes?|corrections?|modifications?|fix(?:es|ing)?)"
    r"|(?:does not|doesn't) (?:return|produce|raise|give|throw)s? (?:any |an )?errors?"
    r"|no (?:changes?|corrections?|modifications?|fix(?:es)?) (?:(?:are|is) )?(?:needed|required|necessary)"
    r"|needs no (?:changes?|corrections?|modifications?|fix(?:es)?)"
    r"|nothing (?:needs to|to) (?:change|be changed|fix|be fixed)"
    r"|(?:is )?not (?:incorrect|wrong)|(?:isn't|is not) (?:incorrect|wrong))\b",
    re.IGNORECASE,
)
_NEGATIVE = re.compile(
    r"^\W*no\b|\b(incorrect|not correct|wrong|does not|doesn't|is not|isn't|fails?|error|mistake|should be)\b",
    re.IGNORECASE,
)
_AFFIRMATIVE = re.compile(r"\b(correct|right|yes|accurate|valid)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_VERDICT_SCAN_CHARS = 4_000  # a verdict comes first; prose beyond this is not read


def _sentence_verdict(sentence: str) -> bool | None:
    """One sentence's verdict: a negative phrase beats an affirmative one; None when it has neither."""
    approving = _APPROVING.search(sentence) is not None
    rest = _APPROVING.sub(" ", sentence)
    if _NEGATIVE.search(rest):
        return False
    if approving or _AFFIRMATIVE.search(rest):
        return True
    return None


def parse_verdict(text: str, original_sql: str | None = None) -> Verdict:
    """Parse an NC answer: the affirmative-phrase rule, plus any corrected SQL it contains.

    The first sentence (outside code blocks) that gives a verdict decides; in it a negative phrase
    beats an affirmative one, and approving phrases with a negative word ("executes without
    error", "no changes are needed") approve. A corrected SQL that merely repeats the original
    counts as "correct". No verdict but a different SQL counts as a correction.
    """
    text = (text or "").strip()
    sql = parse_sql(text) if "```" in text or _SQL_START.search(text) else None
    prose = _FENCE.sub("\n", text[:_VERDICT_SCAN_CHARS])
    correct: bool | None = None
    for sentence in _SENTENCE_END.split(prose):
        correct = _sentence_verdict(sentence)
        if correct is not None:
            break
    if sql is not None and original_sql is not None and _same_sql(sql, original_sql):
        sql = None
        correct = True if correct is None else correct
    if correct is None and sql is not None:
        correct = False
    return Verdict(correct=correct, sql=sql if correct is False else None)


def _same_sql(a: str, b: str) -> bool:
    norm = lambda s: re.sub(r"\s+", " ", s.strip().rstrip(";")).lower()
    return norm(a) == norm(b)
