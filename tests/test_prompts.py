"""Prompt text and forgiving parsers of model output."""

from __future__ import annotations

import pytest

from route_graph import prompts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```sql\nSELECT a FROM t;\n```", "SELECT a FROM t"),
        ("Here you go:\n```SQL\nSELECT a\nFROM t\n```\nThis selects a.", "SELECT a\nFROM t"),
        ("```\nSELECT a FROM t\n```", "SELECT a FROM t"),
        ("SELECT a FROM t;", "SELECT a FROM t"),
        ("The query is: SELECT count(*) FROM t WHERE x = 'a;b';", "SELECT count(*) FROM t WHERE x = 'a;b'"),
        ("```sql\nWITH c AS (SELECT 1) SELECT * FROM c\n```", "WITH c AS (SELECT 1) SELECT * FROM c"),
        ("```sql\nSELECT a FROM t", "SELECT a FROM t"),  # unterminated fence
        ("```sql\nSELECT 1; DROP TABLE t\n```", "SELECT 1"),
        ("I don't know.", None),
        ("", None),
    ],
)
def test_parse_sql(text: str, expected: str | None) -> None:
    assert prompts.parse_sql(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"singer": ["name", "age"]}', {"singer": ["name", "age"]}),
        ('```json\n{"singer": ["name"], "concert": []}\n```', {"singer": ["name"], "concert": []}),
        ("{'singer': ['name'], 'concert': 'year'}", {"singer": ["name"], "concert": ["year"]}),
        ("Tables needed: singer.name, concert.year", {"singer": ["name"], "concert": ["year"]}),
        ("Relevant: {\"singer\": [\"name\"]} because...", {"singer": ["name"]}),
        ("nothing useful", {}),
    ],
)
def test_parse_links(text: str, expected: dict) -> None:
    assert prompts.parse_links(text) == expected


@pytest.mark.parametrize(
    ("text", "correct", "sql"),
    [
        ("The SQL is correct.", True, None),
        ("Yes, the query is correct and answers the question.", True, None),
        ("The SQL is incorrect. The correct SQL is:\n```sql\nSELECT b FROM t\n```", False, "SELECT b FROM t"),
        ("No, it is wrong.\n```sql\nSELECT b FROM t\n```", False, "SELECT b FROM t"),
        ("The SQL is not correct, but I cannot fix it.", False, None),
        ("```sql\nSELECT b FROM t\n```", False, "SELECT b FROM t"),  # no verdict, new SQL
        ("```sql\nSELECT a FROM t;\n```", True, None),  # repeats the original
        ("Hmm.", None, None),
    ],
)
def test_parse_verdict(text: str, correct: bool | None, sql: str | None) -> None:
    verdict = prompts.parse_verdict(text, original_sql="SELECT a FROM t")
    assert (verdict.correct, verdict.sql) == (correct, sql)


def test_completions_parse_back() -> None:
    """Training targets are exactly what the inference parsers read."""
    sql = "SELECT name FROM singer WHERE age > 30"
    assert prompts.parse_sql(prompts.ts_completion(sql + ";")) == sql
    assert prompts.parse_sql(prompts.cw_completion(sql)) == sql
    assert prompts.parse_links(prompts.sl_completion({"singer": ["name", "age"]})) == {"singer": ["name", "age"]}
    assert prompts.parse_verdict(prompts.nc_completion(True), sql) == prompts.Verdict(True, None)
    wrong = prompts.parse_verdict(prompts.nc_completion(False, sql), "SELECT name FROM singer")
    assert wrong == prompts.Verdict(False, sql)
    with pytest.raises(ValueError):
        prompts.nc_completion(False)


@pytest.mark.parametrize("builder", ["ts", "sl", "nc", "cw"])
@pytest.mark.parametrize("style", ["zero_shot", "few_shot"])
def test_messages_shape(builder: str, style: str) -> None:
    args = {
        "ts": ("Q?", "CREATE TABLE t (a INT);"),
        "sl": ("Q?", "CREATE TABLE t (a INT);"),
        "nc": ("Q?", "CREATE TABLE t (a INT);", "SELECT a FROM t", "Rows: 0"),
        "cw": ("Q?", "CREATE TABLE t (a INT);", "SELECT "),
    }[builder]
    msgs = getattr(prompts, f"{builder}_messages")(*args, hint="a is b", dialect="duckdb", style=style)
    assert msgs[0]["role"] == "system" and "DuckDB" in msgs[0]["content"]
    assert msgs[-1]["role"] == "user" and "Q?" in msgs[-1]["content"] and "Hint: a is b" in msgs[-1]["content"]
    assert len(msgs) == (4 if style == "few_shot" else 2)
    if style == "few_shot":
        assert msgs[2]["role"] == "assistant"


def test_join_continuation() -> None:
    assert prompts.join_continuation("SELECT ", "name FROM t") == "SELECT name FROM t"
    assert prompts.join_continuation("SELECT ", "SELECT name FROM t") == "SELECT name FROM t"
    assert prompts.join_continuation("SELECT count(*) FROM", "t WHERE a = 1") == "SELECT count(*) FROM t WHERE a = 1"


@pytest.mark.parametrize(
    "task,prefix,target",
    [
        ("ts", "", prompts.ts_completion("SELECT name FROM singer")),
        ("cw", "SELECT ", prompts.cw_completion("SELECT name FROM singer")),
        ("cw", "SELECT name FROM singer WHERE", prompts.cw_completion("SELECT name FROM singer WHERE age > 3")),
        ("sl", "", prompts.sl_completion({"singer": ["name"]})),
        ("nc", "", prompts.nc_completion(True)),
    ],
)
def test_answer_prefill_opens_the_training_target(task, prefix, target):
    """A fine-tuned model continues exactly the text it was trained to write."""
    prefill = prompts.answer_prefill(task, prefix)
    assert target.startswith(prefill)
    assert prompts.join_prefill(prefill, target[len(prefill):]) == target


def test_join_prefill_keeps_a_reply_that_restarted():
    assert prompts.join_prefill("```sql\n", "```sql\nSELECT 1\n```") == "```sql\nSELECT 1\n```"
    assert prompts.join_prefill("```sql\n", "SELECT 1\n```") == "```sql\nSELECT 1\n```"
    assert prompts.join_prefill("", "anything") == "anything"
