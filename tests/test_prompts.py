"""Prompt text and forgiving parsers of model output."""

from __future__ import annotations

import pytest

from route_graph import prompts
from route_graph.views import parsing


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
    assert parsing.parse_sql(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"singer": ["name", "age"]}', {"singer": ["name", "age"]}),
        ('```json\n{"singer": ["name"], "concert": []}\n```', {"singer": ["name"], "concert": []}),
        ("{'singer': ['name'], 'concert': 'year'}", {"singer": ["name"], "concert": ["year"]}),
        ("Tables needed: singer.name, concert.year", {"singer": ["name"], "concert": ["year"]}),
        ("Relevant: {\"singer\": [\"name\"]} because...", {"singer": ["name"]}),
        ("nothing useful", {}),
        # the tuned model after the bare '{' prefill: JSON without quotes, cut at the token limit
        (
            "{Accounts: [account_id, customer_id], Customers: [customer_id, customer_first_name], Cust",
            {"Accounts": ["account_id", "customer_id"], "Customers": ["customer_id", "customer_first_name"]},
        ),
        ('{"Player Attributes": ["id", "rating"], "Team": ["id"', {"Player Attributes": ["id", "rating"]}),
        ("{singer: [], concert: [year]}", {"singer": [], "concert": ["year"]}),
    ],
)
def test_parse_links(text: str, expected: dict) -> None:
    assert parsing.parse_links(text) == expected


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
        # Approving phrases that hold a negative word (read as "incorrect" before issue 12).
        ("The SQL executes without error and returns the names.", True, None),
        ("The SQL does not need changes.", True, None),
        ("No changes are needed.", True, None),
        ("The query is correct and does not return any errors.", True, None),
        ("The candidate SQL is not incorrect.", True, None),
        ("The SQL is correct.\n```sql\nSELECT a FROM t\n```", True, None),
        # The first sentence that gives a verdict decides, code blocks aside.
        ("Let me check.\nThe SQL is correct.", True, None),
        ("Let me check.\nThe SQL is wrong.\n```sql\nSELECT b FROM t\n```", False, "SELECT b FROM t"),
        ("The SQL should be:\n```sql\nSELECT b FROM t\n```", False, "SELECT b FROM t"),
        ("The SQL is wrong, it should be:\n```sql\nSELECT a FROM t\n```", False, None),  # no new SQL
        ("The query fails on the join.", False, None),
        ("No, the year condition is missing.", False, None),
    ],
)
def test_parse_verdict(text: str, correct: bool | None, sql: str | None) -> None:
    verdict = parsing.parse_verdict(text, original_sql="SELECT a FROM t")
    assert (verdict.correct, verdict.sql) == (correct, sql)


def test_completions_parse_back() -> None:
    """Training targets are exactly what the inference parsers read."""
    sql = "SELECT name FROM singer WHERE age > 30"
    assert parsing.parse_sql(prompts.ts_completion(sql + ";")) == sql
    assert parsing.parse_sql(prompts.cw_completion(sql)) == sql
    assert parsing.parse_links(prompts.sl_completion({"singer": ["name", "age"]})) == {"singer": ["name", "age"]}
    assert parsing.parse_verdict(prompts.nc_completion(True), sql) == parsing.Verdict(True, None)
    wrong = parsing.parse_verdict(prompts.nc_completion(False, sql), "SELECT name FROM singer")
    assert wrong == parsing.Verdict(False, sql)
    assert parsing.parse_sql(prompts.nc_repair_completion(sql + ";")) == sql
    with pytest.raises(ValueError):
        prompts.nc_completion(False)


@pytest.mark.parametrize("builder", ["ts", "sl", "nc", "nc_repair", "cw"])
@pytest.mark.parametrize("style", ["zero_shot", "few_shot"])
def test_messages_shape(builder: str, style: str) -> None:
    args = {
        "ts": ("Q?", "CREATE TABLE t (a INT);"),
        "sl": ("Q?", "CREATE TABLE t (a INT);"),
        "nc": ("Q?", "CREATE TABLE t (a INT);", "SELECT a FROM t", "Rows: 0"),
        "nc_repair": ("Q?", "CREATE TABLE t (a INT);", "SELECT b FROM t", "Execution error: no such column: b"),
        "cw": ("Q?", "CREATE TABLE t (a INT);", "SELECT "),
    }[builder]
    msgs = getattr(prompts, f"{builder}_messages")(*args, hint="a is b", dialect="duckdb", style=style)
    assert msgs[0]["role"] == "system" and "DuckDB" in msgs[0]["content"]
    assert msgs[-1]["role"] == "user" and "Q?" in msgs[-1]["content"] and "Hint: a is b" in msgs[-1]["content"]
    examples = 2 if builder == "nc" else 1  # NC's verdict examples: one correct, one wrong
    assert len(msgs) == (2 + 2 * examples if style == "few_shot" else 2)
    assert [m["role"] for m in msgs[1:-1]] == ["user", "assistant"] * (examples if style == "few_shot" else 0)


def test_nc_verdict_prompt_is_neutral_and_its_examples_balanced() -> None:
    msgs = prompts.nc_messages("Q?", "CREATE TABLE t (a INT);", "SELECT a FROM t", "Rows: 1", style="few_shot")
    instruction = msgs[-1]["content"]
    # The "correct" reply is not the first one offered.
    assert instruction.index(prompts.NC_INCORRECT) < instruction.index(prompts.NC_CORRECT)
    answers = [parsing.parse_verdict(m["content"]).correct for m in msgs if m["role"] == "assistant"]
    assert sorted(answers) == [False, True]


def test_nc_repair_prompt_shows_the_failure_and_asks_no_verdict() -> None:
    msgs = prompts.nc_repair_messages(
        "Which singers?", "CREATE TABLE singer (name TEXT);", "SELECT T2.name FROM singer AS T1",
        "Execution error: no such column: T2.name",
    )
    text = msgs[-1]["content"]
    # the text-to-SQL prompt, then the error; the failing SQL itself is not shown (it gets copied)
    assert text.startswith(prompts.ts_messages("Which singers?", "CREATE TABLE singer (name TEXT);")[-1]["content"])
    assert "A previous attempt failed: Execution error: no such column: T2.name." in text
    assert "SELECT T2.name FROM singer AS T1" not in text
    assert prompts.NC_CORRECT not in text and "Candidate SQL:" not in text
    # an empty result is shown with the SQL that returned it
    empty = prompts.nc_repair_messages(
        "Q?", "CREATE TABLE t (a INT);", "SELECT a FROM t WHERE a = 9", "Columns: a\nRows: 0", problem="empty"
    )
    assert "returned no useful rows" in empty[-1]["content"] and "SELECT a FROM t WHERE a = 9" in empty[-1]["content"]
    unwritten = prompts.nc_repair_messages("Q?", "CREATE TABLE t (a INT);", "", "Rows: 0", problem="empty")
    assert "(no SQL was written)" in unwritten[-1]["content"]


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
        ("nc", "", prompts.nc_completion(False, "SELECT name FROM singer")),
        ("nc_repair", "", prompts.nc_repair_completion("SELECT name FROM singer")),
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
