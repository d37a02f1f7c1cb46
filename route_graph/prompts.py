"""The four ROUTE task prompts (NC in two forms: a verdict on SQL that runs, a repair of SQL that
fails or returns nothing), their target completions and their forgiving parsers, plus the two chat
prompts (rewriting a follow-up into a standalone question, a one-sentence answer).

This module is the ONE source of prompt text: the graph's nodes send these messages at inference
and ``finetune`` builds its training records (prompt = messages, completion = ``*_completion``)
from the very same functions, so a fine-tuned model sees exactly the text it was trained on.
Messages are plain ``{"role", "content"}`` dicts, which LangChain chat models accept as they are
and which chat templates (transformers, TRL) consume directly.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from route_graph.sql_bounds import utf8_safe

__all__ = [
    "VALUES_HEADER",
    "Message",
    "PromptStyle",
    "RepairProblem",
    "Task",
    "Values",
    "Verdict",
    "answer_messages",
    "answer_prefill",
    "answer_text",
    "cw_completion",
    "cw_messages",
    "dialect_label",
    "join_continuation",
    "join_prefill",
    "nc_completion",
    "nc_messages",
    "nc_repair_completion",
    "nc_repair_messages",
    "parse_links",
    "parse_rewrite",
    "parse_sql",
    "parse_verdict",
    "rewrite_messages",
    "sl_completion",
    "sl_messages",
    "ts_completion",
    "ts_messages",
    "values_block",
]

Message = dict[str, str]
PromptStyle = Literal["zero_shot", "few_shot"]
#: What execution found wrong with a SQL that noise correction repairs.
RepairProblem = Literal["error", "empty", "null"]

SYSTEM = "You are an expert in {dialect} databases who writes correct, executable SQL."

_DIALECT_LABELS = {
    "sqlite": "SQLite",
    "duckdb": "DuckDB",
    "postgres": "PostgreSQL",
    "mysql": "MySQL",
    "tsql": "T-SQL",
    "bigquery": "BigQuery",
    "snowflake": "Snowflake",
    "oracle": "Oracle",
}


def dialect_label(dialect: str) -> str:
    """Human name of a sqlglot dialect for prompt text (``"sqlite"`` -> ``"SQLite"``)."""
    return _DIALECT_LABELS.get(dialect.lower(), dialect)


VALUES_HEADER = "-- Values in the database that match the question:"
#: Retrieved values (``values.render_matches``): prompt lines ``table.column: 'value'``, or their text.
Values = Sequence[str] | str | None


def values_block(values: Values) -> str:
    """The retrieved-values block shown after the schema; "" when there are none."""
    lines = values.splitlines() if isinstance(values, str) else list(values or ())
    lines = [line.strip().removeprefix("--").strip() for line in lines]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    return "\n".join([VALUES_HEADER, *(f"-- {line}" for line in lines)])


def _context(schema: str, question: str, hint: str | None, values: Values = None) -> str:
    parts = [f"Database schema:\n{schema.strip()}", ""]
    block = values_block(values)
    if block:
        parts += [block, ""]
    if hint:
        parts.append(f"Hint: {hint.strip()}")
    parts.append(f"Question: {question.strip()}")
    return "\n".join(parts)


def _sql_block(sql: str) -> str:
    return f"```sql\n{sql.strip().rstrip(';').strip()}\n```"


# --------------------------------------------------------------------------------------------
# Few-shot examples for base (not fine-tuned) models: one tiny schema, not taken from any benchmark.
_EXAMPLE_SCHEMA = """CREATE TABLE author (
  author_id INTEGER,
  name TEXT,
  country TEXT,
  PRIMARY KEY (author_id)
);
CREATE TABLE book (
  book_id INTEGER,
  title TEXT,
  year INTEGER,
  author_id INTEGER,
  PRIMARY KEY (book_id),
  FOREIGN KEY (author_id) REFERENCES author(author_id)
);"""
_EXAMPLE_QUESTION = "What are the names of authors from Canada who wrote a book after 2000?"
_EXAMPLE_SQL = (
    "SELECT DISTINCT T1.name FROM author AS T1 JOIN book AS T2 ON T1.author_id = T2.author_id "
    "WHERE T1.country = 'Canada' AND T2.year > 2000"
)
_EXAMPLE_LINKS = {"author": ["author_id", "name", "country"], "book": ["year", "author_id"]}
# Feedback in ``sql.result.summarize_result``'s format, as the model sees it for real SQL.
_EXAMPLE_FEEDBACK = "Columns: name\nRows: 1\nAll rows:\nname\nMargaret Atwood"
_EXAMPLE_WRONG_SQL = "SELECT name FROM author WHERE country = 'Canada'"
_EXAMPLE_WRONG_FEEDBACK = "Columns: name\nRows: 2\nAll rows:\nname\nAlice Munro\nMargaret Atwood"
_EXAMPLE_BROKEN_SQL = _EXAMPLE_SQL.replace("T1.country", "T2.country")
_EXAMPLE_BROKEN_FEEDBACK = "Execution error: no such column: T2.country"


def _with_style(
    system: str, user: str, style: PromptStyle, examples: Sequence[tuple[str, str]]
) -> list[Message]:
    """System, then (few-shot only) each worked example as a user/assistant turn, then the task."""
    messages: list[Message] = [{"role": "system", "content": system}]
    if style == "few_shot":
        for example_user, example_answer in examples:
            messages += [
                {"role": "user", "content": example_user},
                {"role": "assistant", "content": example_answer},
            ]
    messages.append({"role": "user", "content": user})
    return messages


# --------------------------------------------------------------------------------------------
# Text-to-SQL (TS)
def _ts_user(schema: str, question: str, hint: str | None, dialect: str, values: Values = None) -> str:
    return (
        f"{_context(schema, question, hint, values)}\n\n"
        f"Write one {dialect_label(dialect)} query that answers the question, using only the tables "
        "and columns above. Reply with the SQL in a ```sql code block."
    )


def ts_messages(
    question: str,
    schema: str,
    *,
    hint: str | None = None,
    dialect: str = "sqlite",
    style: PromptStyle = "zero_shot",
    values: Values = None,
) -> list[Message]:
    """Text-to-SQL: question (+hint) and a rendered schema (+matching values) -> one SQL query."""
    return _with_style(
        SYSTEM.format(dialect=dialect_label(dialect)),
        _ts_user(schema, question, hint, dialect, values),
        style,
        [(_ts_user(_EXAMPLE_SCHEMA, _EXAMPLE_QUESTION, None, dialect), ts_completion(_EXAMPLE_SQL))],
    )


def ts_completion(sql: str) -> str:
    """Target answer of the TS task."""
    return _sql_block(sql)


# --------------------------------------------------------------------------------------------
# Schema linking (SL)
def _sl_user(schema: str, question: str, hint: str | None, values: Values = None) -> str:
    return (
        f"{_context(schema, question, hint, values)}\n\n"
        "Which tables and columns are needed to write the SQL query that answers the question? "
        # No copyable placeholder: small models echoed '{"table_a": ...}' as "table_person".
        "Reply with a JSON object whose keys are the needed tables, spelled as in the schema, and "
        "whose values are the lists of their needed columns."
    )


def sl_messages(
    question: str,
    schema: str,
    *,
    hint: str | None = None,
    dialect: str = "sqlite",
    style: PromptStyle = "zero_shot",
    values: Values = None,
) -> list[Message]:
    """Schema linking: question and full schema (+matching values) -> ``{table: [columns]}`` as JSON."""
    return _with_style(
        SYSTEM.format(dialect=dialect_label(dialect)),
        _sl_user(schema, question, hint, values),
        style,
        [(_sl_user(_EXAMPLE_SCHEMA, _EXAMPLE_QUESTION, None), sl_completion(_EXAMPLE_LINKS))],
    )


def sl_completion(links: dict[str, list[str]]) -> str:
    """Target answer of the SL task: compact JSON, tables and columns in the given order."""
    return json.dumps({t: list(cols) for t, cols in links.items()}, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# Noise correction (NC)
NC_CORRECT = "The SQL is correct."
NC_INCORRECT = "The SQL is incorrect. The correct SQL is:"


def _nc_user(schema: str, question: str, hint: str | None, sql: str, feedback: str, values: Values = None) -> str:
    # Neutral on purpose: neither verdict is offered first as "the" reply (small models copy the
    # first reply they are shown), and the few-shot examples hold one of each.
    return (
        f"{_context(schema, question, hint, values)}\n\n"
        f"Candidate SQL:\n{_sql_block(sql)}\n\n"
        f"Execution result:\n{feedback.strip()}\n\n"
        "Check the candidate SQL against the question: its tables, columns, joins, conditions and "
        "its execution result. Then give one of the two verdicts:\n"
        f'- "{NC_INCORRECT}" followed by the corrected SQL in a ```sql code block, if anything '
        "must change;\n"
        f'- "{NC_CORRECT}" if nothing must change.'
    )


def nc_messages(
    question: str,
    schema: str,
    sql: str,
    feedback: str,
    *,
    hint: str | None = None,
    dialect: str = "sqlite",
    style: PromptStyle = "zero_shot",
    values: Values = None,
) -> list[Message]:
    """Noise correction: question, schema (+matching values), candidate SQL and its execution
    feedback -> verdict."""
    return _with_style(
        SYSTEM.format(dialect=dialect_label(dialect)),
        _nc_user(schema, question, hint, sql, feedback, values),
        style,
        [
            (_nc_user(_EXAMPLE_SCHEMA, _EXAMPLE_QUESTION, None, _EXAMPLE_SQL, _EXAMPLE_FEEDBACK), nc_completion(True)),
            (
                _nc_user(_EXAMPLE_SCHEMA, _EXAMPLE_QUESTION, None, _EXAMPLE_WRONG_SQL, _EXAMPLE_WRONG_FEEDBACK),
                nc_completion(False, _EXAMPLE_SQL),
            ),
        ],
    )


def nc_completion(correct: bool, corrected_sql: str | None = None) -> str:
    """Target answer of the NC task: the verdict, plus the corrected SQL when wrong."""
    if correct:
        return NC_CORRECT
    if not corrected_sql:
        raise ValueError("An 'incorrect' NC target needs the corrected SQL.")
    return f"{NC_INCORRECT}\n{_sql_block(corrected_sql)}"


def _nc_repair_user(
    schema: str,
    question: str,
    hint: str | None,
    sql: str,
    feedback: str,
    dialect: str,
    values: Values = None,
    problem: RepairProblem = "error",
) -> str:
    if problem == "error":
        # The failing SQL is not shown: a small model shown it copies it back verbatim (untuned 0.5B:
        # 9 of 10 failing SQL repeated, 0 fixed; with only the error, 4 of 10 fixed, all right).
        note = f"A previous attempt failed: {feedback.strip()}. Use only names from the schema."
    else:
        shown = _sql_block(sql) if sql.strip() else "(no SQL was written)"
        note = (
            f"A previous attempt returned no useful rows (none, or only NULLs):\n{shown}\n{feedback.strip()}\n"
            "Write a different query."
        )
    return f"{_ts_user(schema, question, hint, dialect, values)}\n\n{note}"


def nc_repair_messages(
    question: str,
    schema: str,
    sql: str,
    feedback: str,
    *,
    hint: str | None = None,
    dialect: str = "sqlite",
    style: PromptStyle = "zero_shot",
    values: Values = None,
    problem: RepairProblem = "error",
) -> list[Message]:
    """Noise correction of SQL that fails (``problem="error"``), returns no rows or only NULLs: no
    verdict is asked (the execution already gave it), only a new SQL: the text-to-SQL prompt on the
    full schema (so a column that linking dropped can come back) plus what went wrong. A failing
    SQL is described by its error alone (see ``_nc_repair_user``); an empty one is shown."""
    return _with_style(
        SYSTEM.format(dialect=dialect_label(dialect)),
        _nc_repair_user(schema, question, hint, sql, feedback, dialect, values, problem),
        style,
        [
            (
                _nc_repair_user(
                    _EXAMPLE_SCHEMA, _EXAMPLE_QUESTION, None, _EXAMPLE_BROKEN_SQL, _EXAMPLE_BROKEN_FEEDBACK, dialect
                ),
                nc_repair_completion(_EXAMPLE_SQL),
            )
        ],
    )


def nc_repair_completion(sql: str) -> str:
    """Target answer of the NC repair prompt: the repaired SQL alone."""
    return _sql_block(sql)


# --------------------------------------------------------------------------------------------
# Continuation writing (CW)
def _cw_user(schema: str, question: str, hint: str | None, prefix: str, values: Values = None) -> str:
    return (
        f"{_context(schema, question, hint, values)}\n\n"
        "Complete the following unfinished SQL query so that it answers the question:\n"
        f"{prefix.rstrip()} ...\n\n"
        "Reply with the complete SQL query (starting with the unfinished part) in a ```sql code block."
    )


def cw_messages(
    question: str,
    schema: str,
    prefix: str = "SELECT ",
    *,
    hint: str | None = None,
    dialect: str = "sqlite",
    style: PromptStyle = "zero_shot",
    values: Values = None,
) -> list[Message]:
    """Continuation writing: question, schema (+matching values) and a truncated SQL -> the completed SQL."""
    example_prefix = _EXAMPLE_SQL[: _EXAMPLE_SQL.index(" FROM")]
    return _with_style(
        SYSTEM.format(dialect=dialect_label(dialect)),
        _cw_user(schema, question, hint, prefix, values),
        style,
        [(_cw_user(_EXAMPLE_SCHEMA, _EXAMPLE_QUESTION, None, example_prefix), cw_completion(_EXAMPLE_SQL))],
    )


def cw_completion(sql: str) -> str:
    """Target answer of the CW task: the whole SQL (prefix included)."""
    return _sql_block(sql)


def join_continuation(prefix: str, sql: str) -> str:
    """Whole SQL from a CW answer: models sometimes repeat the prefix, sometimes only continue it."""
    body = sql.strip()
    head = prefix.strip()
    if not head or body.lower().startswith(head.lower()):
        return body
    return f"{prefix.rstrip()} {body}".strip()


# --------------------------------------------------------------------------------------------
# Answer prefill: the opening of each task's target completion, given to the model to continue.
Task = Literal["ts", "sl", "nc", "nc_repair", "cw"]


def answer_prefill(task: Task, prefix: str = "") -> str:
    """How the target completion of ``task`` starts, for backends that continue a prefilled answer.

    Every target above starts with this text (CW's with the unfinished SQL ``prefix``), so a
    fine-tuned model continues exactly what it was trained to write, and a base model answers
    with SQL or JSON at once instead of a long explanation. NC's verdict target opens with a
    verdict, so it gets none; NC repair's target is the SQL alone.
    """
    if task in ("ts", "nc_repair"):
        return "```sql\n"
    if task == "cw":
        return "```sql\n" + prefix.strip()
    if task == "sl":
        # '{"', not '{': Qwen's tokenizer encodes a target '{"Accounts": …' as '{"' + 'Accounts',
        # so a bare '{' is a token boundary the tuned model never saw, and after it the MSFT v3
        # model wrote unquoted or empty links in 395 of 400 questions (benchmarks/HISTORY.md).
        return '{"'
    return ""


def join_prefill(prefill: str, reply: str) -> str:
    """The whole answer: the prefill plus its continuation (or the reply alone if it restarted)."""
    if not prefill or reply.lstrip().startswith(prefill.strip()):
        return reply
    return prefill + reply


# --------------------------------------------------------------------------------------------
# Chat: a follow-up rewritten into a standalone question; an optional one-sentence answer.
REWRITE_SYSTEM = "You rewrite follow-up questions about a database into standalone questions."


def rewrite_messages(history: list[Message], question: str) -> list[Message]:
    """Follow-up + earlier turns -> one standalone question (the SQL stages see no history)."""
    turns = "\n".join(
        f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content'].strip()}" for m in history
    )
    user = (
        f"Conversation so far:\n{turns}\n\n"
        f"Follow-up question: {question.strip()}\n\n"
        "Rewrite the follow-up question as one standalone question that can be understood without "
        "the conversation (keep every table, value and condition it refers to). If it is already "
        "standalone, repeat it unchanged. Reply with the question only."
    )
    return [{"role": "system", "content": REWRITE_SYSTEM}, {"role": "user", "content": user}]


def parse_rewrite(text: str, fallback: str) -> str:
    """The standalone question from a rewrite answer; the original follow-up if there is none."""
    for line in text.strip().splitlines():
        line = re.sub(r"^\s*(standalone question|question|rewritten question)\s*:\s*", "", line, flags=re.IGNORECASE)
        line = line.strip().strip('"').strip("'").strip()
        if line:
            return line
    return fallback


def answer_messages(question: str, sql: str, feedback: str) -> list[Message]:
    """Question, final SQL and its result summary -> one sentence for a chat reply."""
    user = (
        f"Question: {question.strip()}\n\n"
        f"SQL:\n{_sql_block(sql)}\n\n"
        f"Execution result:\n{feedback.strip()}\n\n"
        "Answer the question in one short sentence, using only the execution result."
    )
    return [{"role": "system", "content": "You answer questions from SQL query results."}, {"role": "user", "content": user}]


# --------------------------------------------------------------------------------------------
# Parsers: model output is untrusted and irregular, and may be huge. Every scan below runs in
# time linear in the text (no pattern rescans what it failed on), so a megabyte answer costs
# milliseconds, not hours.
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


def answer_text(content: object) -> str:
    """A chat message's ``content`` as plain text: None is "", content blocks are joined.

    Lone surrogates are replaced, so every string taken from an answer can be stored by
    LangGraph's checkpointers (msgpack) and orjson, which accept only valid UTF-8.
    """
    if content is None:
        return ""
    if isinstance(content, list):  # content blocks
        content = "".join(_block_text(block) for block in content)
    return utf8_safe(content if isinstance(content, str) else str(content))


def _block_text(block: object) -> str:
    if isinstance(block, dict):
        value = block.get("text")
        return "" if value is None else str(value)
    return "" if block is None else str(block)


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
