"""Fuzzed model answers through the real compiled graph: no exception, every state serializable.

A seeded generator writes each answer (garbage, huge text, deep nesting, unicode with lone
surrogates, JSON fragments, hostile or odd-valued SQL, ``None`` content); every intermediate state
the graph streams must encode with orjson (as LangGraph's server and Studio do), and the final
state must also survive LangGraph's checkpoint serializer unchanged. Answers depend only on (case, task), not on which of the concurrent SL/TS calls
draws first, so a failing case number reproduces.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import BaseModel, PrivateAttr

from route_graph import build_route_graph
from route_graph.graph.pipeline import NO_SQL_ERROR
from tests.fakes import ScriptedChatModel, make_concert_db, task_of

CASES = 1_000
SEED = 20_250_115

# SQL that executes but yields values JSON cannot hold as they are.
_ODD_VALUE_SQL = [
    "SELECT x'00ff10' AS blob_value, name FROM singer",
    "SELECT 9223372036854775807 AS big, -9223372036854775808 AS small",
    "SELECT 1e308 * 10 AS inf, -1e308 * 10 AS ninf",
    "SELECT CAST('12.50' AS NUMERIC) AS num, 1.0 / 3 AS third",
    "SELECT printf('%.*c', 50000, 'x') AS long_text, name FROM singer",
    "SELECT randomblob(8)",
    "SELECT char(55296) AS surrogate_code, char(0) AS nul",
    "SELECT name, NULL AS nothing FROM singer",
    "SELECT 1 UNION ALL SELECT 2",
    "SELECT name FROM singer WHERE country = 'France'",
]
_HOSTILE_SQL = [
    "DROP TABLE singer",
    "DELETE FROM singer",
    "ATTACH DATABASE 'x.db' AS x",
    "PRAGMA writable_schema=ON",
    "SELECT load_extension('evil')",
    "SELECT 1; DROP TABLE singer",
    "SELECT * FROM sqlite_master; PRAGMA query_only=OFF",
]
_JSON_FRAGMENTS = [
    '{"singer": [',
    '{"singer": ["name", "country"]}',
    '{"singer": null, "concert": 5, "stadium": {"a": 1}}',
    '{"": [""], "singer": [null, 1, 2.5, true]}',
    "{'singer': ('name',), 'concert': {'year'}}",
    '{"singer": "name"}',
    "[1, 2, 3]",
    '{"a": 1e999, "b": -0, "c": 123456789012345678901234567890}',
    "{" * 5_000 + "}" * 5_000,
    "[" * 5_000,
    '{"singer": ["name"]' * 300,
    '{"\\ud800": ["\\udfff"]}',
    "singer.name, concert.year, Player Attributes.id, 1.5, .x, a.",
]


# Printable ASCII, Latin, Greek, Hebrew/Arabic, CJK, lone surrogates, emoji, control and
# bidi/zero-width characters.
_CHAR_RANGES = [
    (0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x590, 0x6FF), (0x4E00, 0x4FFF),
    (0xD800, 0xDFFF), (0x1F300, 0x1F64F), (0x0, 0x1F), (0x200B, 0x202E),
]
_CHARS = [chr(c) for lo, hi in _CHAR_RANGES for c in range(lo, hi + 1, max(1, (hi - lo) // 200))]


def _unicode(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(_CHARS, k=n))


def _nested_sql(rng: random.Random) -> str:
    depth = rng.choice([10, 31, 33, 60, 150, 400, 3_000])
    kind = rng.randrange(5)
    if kind == 0:
        return "SELECT " + "(" * depth + "1" + ")" * depth
    if kind == 1:
        return "SELECT * FROM " + "(SELECT * FROM " * depth + "singer" + ")" * depth
    if kind == 2:
        return "SELECT " + "NOT " * depth + "1"
    if kind == 3:
        return "SELECT " + "CASE WHEN 1 THEN " * depth + "1" + " END" * depth
    return "SELECT " + "(" * depth  # unbalanced


def _huge(rng: random.Random) -> str:
    size = rng.choice([25_000, 25_000, 100_000])
    unit = rng.choice(["a b ", "a", "a.", "/*a", "(", "'", "```", "SELECT ", "singer.", "\n \n", "{"])
    text = unit * (size // len(unit))
    return rng.choice(["", "```sql\n", "VALUES ('", "SELECT ", "The SQL is incorrect.\n```sql\n"]) + text


def _fence(sql: str) -> str:
    return f"```sql\n{sql}\n```"


def _sql_answer(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return _fence(rng.choice(_ODD_VALUE_SQL))
    if kind == 1:
        return _fence(rng.choice(_HOSTILE_SQL))
    if kind == 2:
        return _fence(_nested_sql(rng))
    if kind == 3:
        return "```sql\n" + _unicode(rng, rng.randint(0, 300))  # unterminated fence
    if kind == 4:
        return "SELECT " + _unicode(rng, rng.randint(1, 200))
    return rng.choice(_ODD_VALUE_SQL)  # bare SQL


def answer(case: int, task: str) -> Any:
    """The fuzzed content for one call: str, None, or content blocks."""
    rng = random.Random(f"{SEED}:{case}:{task}")
    kind = rng.randrange(10)
    if kind == 0:
        return None
    if kind == 1:
        return [{"type": "text", "text": None}, {"type": "text", "text": _unicode(rng, 50)}, {"type": "image"}]
    if kind == 2:
        return _unicode(rng, rng.randint(0, 2_000))
    if kind == 3:
        return _huge(rng)
    if kind == 4:
        return rng.choice(_JSON_FRAGMENTS)
    if kind == 5 and task in ("nc", "nc_repair"):
        return rng.choice(["The SQL is incorrect. The correct SQL is:\n", "Wrong.\n", ""]) + _sql_answer(rng)
    if kind == 6:
        return rng.choice(["", " ", "\x00", "```", "```sql", "{}", "None", "null", "SELECT", ";;;"])
    return _sql_answer(rng)


class FuzzChatModel(BaseChatModel):
    """Answers each call with ``answer(case, task)``; content may be None, as some backends send."""

    _local: threading.local = PrivateAttr(default_factory=threading.local)
    _case: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "fuzz-fake"

    def set_case(self, case: int) -> None:
        self._case = case

    def _message(self, messages: list[Any]) -> AIMessage:
        last = messages[-1]
        content = last["content"] if isinstance(last, dict) else last.content
        task = task_of([AIMessage(content=str(content))])
        return AIMessage.model_construct(content=answer(self._case, task), usage_metadata=None)

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> BaseMessage:
        return self._message(list(input))

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._message(messages))])


def _pydantic(value: Any) -> Any:
    """orjson's fallback as LangGraph's server and Studio use it: pydantic models (messages) only."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def _assert_json(state: dict[str, Any], case: int) -> bytes:
    try:
        return orjson.dumps(state, default=_pydantic)
    except TypeError as exc:
        pytest.fail(f"case {case}: orjson cannot encode the state: {exc}")


def _assert_checkpointable(state: dict[str, Any], case: int) -> None:
    encoded = _assert_json(state, case)
    serde = JsonPlusSerializer()
    try:
        decoded = serde.loads_typed(serde.dumps_typed(state))
    except TypeError as exc:
        pytest.fail(f"case {case}: LangGraph's serializer cannot encode the state: {exc}")
    # msgpack replaces what it cannot hold (lone surrogates) and NaN never equals itself: both
    # would show up as a difference here.
    assert orjson.loads(orjson.dumps(decoded, default=_pydantic)) == orjson.loads(encoded), f"case {case}"


def test_fuzzed_answers_never_raise_and_states_serialize(tmp_path: Path) -> None:
    db_path = make_concert_db(tmp_path / "concert.sqlite")
    before = db_path.read_bytes()
    llm = FuzzChatModel()
    graph = build_route_graph(llm, db_path)
    kinds_seen: set[str] = set()
    for case in range(CASES):
        llm.set_case(case)
        final: dict[str, Any] = {}
        try:
            for state in graph.stream({"question": "Which singers are from France?"}, stream_mode="values"):
                _assert_json(state, case)  # every intermediate state (orjson is the stricter)
                final = state
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - any exception out of the graph is the failure
            pytest.fail(f"case {case}: {type(exc).__name__} out of the graph: {exc!s:.300}")
        _assert_checkpointable(final, case)
        assert final.get("trace"), f"case {case}: no trace"
        assert "finalize" in [entry["stage"] for entry in final["trace"]], f"case {case}"
        result = final["result"]
        kinds_seen.add("ok" if result["ok"] else str(result["error_kind"]))
    # The fuzz reached executing, rejected and failing SQL alike (else it tested too little).
    assert {"ok", "rejected", "error"} <= kinds_seen, kinds_seen
    assert db_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["concert.sqlite"]


class NoneContentChatModel(FuzzChatModel):
    """Every answer is a message whose content is None."""

    def _message(self, messages: list[Any]) -> AIMessage:
        return AIMessage.model_construct(content=None, usage_metadata=None)


def test_none_content_is_an_empty_answer(tmp_path: Path) -> None:
    graph = build_route_graph(NoneContentChatModel(), make_concert_db(tmp_path / "concert.sqlite"))
    out = graph.invoke({"question": "Which singers are from France?"})
    stages = {entry["stage"]: entry for entry in out["trace"]}
    assert stages["generate"]["proposed_sql"] is None and stages["generate"]["error"] == NO_SQL_ERROR
    assert stages["schema_link"]["model_links"] == {} and stages["schema_link"]["llm_calls"] == 2
    assert stages["noise_correct"]["mode"] == "repair" and stages["noise_correct"]["proposed_sql"] is None
    assert not out["result"]["ok"] and out["sql"] == ""
    _assert_checkpointable(out, 0)


def test_deeply_nested_sql_is_a_failing_candidate(tmp_path: Path) -> None:
    parens = "SELECT " + "(" * 500 + "1" + ")" * 500
    subqueries = "SELECT * FROM " + "(SELECT * FROM " * 150 + "singer" + ")" * 150
    nots = "SELECT " + "NOT " * 2_000 + "1"  # deep without parentheses: sqlglot's RecursionError
    llm = ScriptedChatModel(
        scripts={
            "sl": ['{"singer": ["name"]}'],
            "ts": [_fence(parens), _fence(subqueries)],
            "nc_repair": [_fence(nots)],
            "cw": [_fence("name FROM singer WHERE country = 'France'")],
        }
    )
    graph = build_route_graph(llm, make_concert_db(tmp_path / "concert.sqlite"))
    out = graph.invoke({"question": "Which singers are from France?"})
    stages = {entry["stage"]: entry for entry in out["trace"]}
    assert stages["schema_link"]["sql_links"] == {} and "levels deep" in stages["schema_link"]["error"]
    assert not stages["generate"]["executed"] and "150 levels deep" in stages["generate"]["error"]
    assert not stages["noise_correct"]["accepted"] and not stages["noise_correct"]["executed"]
    assert stages["continue_write"]["accepted"]
    assert out["sql"] == "SELECT name FROM singer WHERE country = 'France'" and out["result"]["ok"]
    _assert_checkpointable(out, 0)
