"""The four ROUTE task prompts (NC in two forms: a verdict on SQL that runs, a repair of SQL that
fails or returns nothing) and their target completions, plus the two chat prompts (rewriting a
follow-up into a standalone question, a one-sentence answer). Their answers are read by the
forgiving parsers of ``route_graph.views.parsing``.

This module is the ONE source of prompt text: the graph's nodes send these messages at inference
and ``finetune`` builds its training records (prompt = messages, completion = ``*_completion``)
from the very same functions, so a fine-tuned model sees exactly the text it was trained on.
Messages are plain ``{"role", "content"}`` dicts, which LangChain chat models accept as they are
and which chat templates (transformers, TRL) consume directly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal

from route_graph.sql_bounds import utf8_safe

__all__ = [
    "VALUES_HEADER",
    "Message",
    "PromptStyle",
    "RepairProblem",
    "Task",
    "Values",
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
# A model's answer as text (the parsers of each task's answer are in ``route_graph.views.parsing``).
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
