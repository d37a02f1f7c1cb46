"""Every path through the MCP graph, with a chat model scripted per task and a real SQLite file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from route_graph import RouteConfig, build_route_graph
from tests.fakes import ScriptedChatModel, make_concert_db, make_singer_duckdb, task_of

SQL_FRENCH = "SELECT name FROM singer WHERE country = 'France'"
SQL_THREE_TABLES = (
    "SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
    "JOIN concert AS T3 ON T2.concert_id = T3.concert_id WHERE T3.year = 2014"
)


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    return make_concert_db(tmp_path / "concert.sqlite")


def fence(sql: str) -> str:
    return f"```sql\n{sql}\n```"


def run(db_path: Path, scripts: dict[str, list[str]], config: RouteConfig | None = None, **invoke_kwargs):
    if "nc" in scripts and (config is None or "nc_verdict" not in config.named_fields):
        # A scripted verdict is a test of the verdict path, which is off by default (nc_verdict).
        config = (config or RouteConfig()).override({"nc_verdict": True})
    llm = ScriptedChatModel(scripts=scripts)
    graph = build_route_graph(llm, db_path, config)
    out = graph.invoke({"question": "Which singers are from France?"}, **invoke_kwargs)
    # Every script line was consumed: no stage was skipped or called twice by mistake.
    assert all(not lines for lines in llm.scripts.values()), llm.scripts
    return out, llm


def stages(out) -> list[str]:
    return [entry["stage"] for entry in out["trace"]]


def entry(out, stage: str) -> dict:
    return next(e for e in out["trace"] if e["stage"] == stage)


def test_full_pipeline_nc_accepts_and_cw_skipped(db_path: Path) -> None:
    out, llm = run(
        db_path,
        {
            "sl": ['{"singer": ["name", "country"]}'],
            "ts": [fence("SELECT name FROM singer"), fence(SQL_FRENCH)],
            "nc": ["The SQL is correct."],
        },
    )
    assert stages(out) == ["schema_link", "generate", "noise_correct", "finalize"]
    assert out["sql"] == SQL_FRENCH
    assert out["stage"] == "generate"
    assert out["result"]["ok"] and sorted(r[0] for r in out["result"]["rows"]) == ["Edith", "Jacques"]
    assert out["links"] == {"singer": ["name", "country"]}
    assert entry(out, "noise_correct")["verdict"] == "correct"
    assert out["sql_by_stage"]["draft"] == "SELECT name FROM singer"
    # The generation prompt saw only the reduced schema.
    ts_prompts = [p for task, p in llm.calls if task == "ts"]
    assert "CREATE TABLE stadium" in ts_prompts[0] and "CREATE TABLE stadium" not in ts_prompts[1]
    assert entry(out, "schema_link")["llm_calls"] == 2


def test_nc_rejects_and_executable_correction_wins(db_path: Path) -> None:
    out, _ = run(
        db_path,
        {
            "sl": ['{"singer": ["name"]}'],
            "ts": [fence("SELECT name FROM singer"), fence("SELECT name FROM singer")],
            "nc": ["The SQL is incorrect. The correct SQL is:\n" + fence(SQL_FRENCH)],
        },
        RouteConfig(vote=False),  # with the vote, draft and generate agreeing would outvote NC
    )
    nc = entry(out, "noise_correct")
    assert nc["verdict"] == "incorrect" and nc["accepted"] and nc["executed"]
    assert out["sql"] == SQL_FRENCH and out["stage"] == "noise_correct"
    assert out["sql_by_stage"]["generate"] == "SELECT name FROM singer"


def test_nc_correction_that_fails_is_not_taken(db_path: Path) -> None:
    out, _ = run(
        db_path,
        {
            "sl": ['{"singer": ["name"]}'],
            "ts": [fence("SELECT name FROM singer"), fence(SQL_FRENCH)],
            "nc": ["The SQL is incorrect.\n" + fence("SELECT nationality FROM singer")],
        },
    )
    nc = entry(out, "noise_correct")
    assert nc["verdict"] == "incorrect" and not nc["accepted"] and nc["executed"] is False
    assert "nationality" in nc["error"]
    assert out["sql"] == SQL_FRENCH and out["stage"] == "generate"


def test_cw_triggered_by_execution_error(db_path: Path) -> None:
    out, llm = run(
        db_path,
        {
            "sl": ['{"singer": ["nme"]}'],  # hallucinated column
            "ts": [fence("SELECT nme FROM singer"), fence("SELECT nme FROM singer")],
            "nc_repair": ["I cannot fix it."],
            "cw": [fence("name FROM singer WHERE country = 'France'")],
        },
    )
    sl = entry(out, "schema_link")
    assert "singer.nme" in sl["hallucinated"]
    cw = entry(out, "continue_write")
    assert cw["reason"] == "not_executable" and cw["accepted"]
    assert out["sql"] == "SELECT name FROM singer WHERE country = 'France'"
    assert out["stage"] == "continue_write"
    assert "SELECT ..." in [p for t, p in llm.calls if t == "cw"][0]


def test_cw_triggered_by_difficulty(db_path: Path) -> None:
    out, _ = run(
        db_path,
        {
            "sl": ['{"singer": ["name"], "concert": ["year"], "singer_in_concert": []}'],
            "ts": [fence(SQL_THREE_TABLES), fence(SQL_THREE_TABLES)],
            "nc": ["The SQL is correct."],
            "cw": [fence("SELECT DISTINCT T1.name " + SQL_THREE_TABLES[len("SELECT T1.name "):])],
        },
    )
    cw = entry(out, "continue_write")
    assert cw["reason"] == "hard" and cw["accepted"] and cw["rows"] == 2
    assert out["sql"].startswith("SELECT DISTINCT") and out["stage"] == "continue_write"
    assert out["links"]["singer_in_concert"] == ["concert_id", "singer_id"]


def test_cw_on_hard_sql_rejected_when_result_empty(db_path: Path) -> None:
    out, _ = run(
        db_path,
        {
            "sl": ['{"singer": ["name"], "concert": ["year"], "singer_in_concert": []}'],
            "ts": [fence(SQL_THREE_TABLES), fence(SQL_THREE_TABLES)],
            "nc": ["Yes, it is correct."],
            "cw": [fence(SQL_THREE_TABLES.replace("2014", "1900"))],
        },
    )
    cw = entry(out, "continue_write")
    assert cw["executed"] and cw["rows"] == 0 and not cw["accepted"]
    assert out["sql"] == SQL_THREE_TABLES and out["stage"] == "generate"


@pytest.mark.parametrize(
    ("stages_on", "scripts", "expected"),
    [
        (
            "nc,cw",  # SL off: generate on the full schema, no draft
            {"ts": [fence(SQL_FRENCH)], "nc": ["The SQL is correct."]},
            ["generate", "noise_correct", "finalize"],
        ),
        (
            "sl,cw",  # NC off: straight to the continuation decision
            {"sl": ['{"singer": ["name"]}'], "ts": [fence(SQL_FRENCH), fence(SQL_FRENCH)]},
            ["schema_link", "generate", "finalize"],
        ),
        (
            "sl,nc",  # CW off: a failing SQL is not continued
            {
                "sl": ['{"singer": ["name"]}'],
                "ts": [fence(SQL_FRENCH), fence("SELECT nme FROM singer")],
                "nc_repair": ["The SQL is correct."],
            },
            ["schema_link", "generate", "noise_correct", "finalize"],
        ),
        ("", {"ts": [fence(SQL_FRENCH)]}, ["generate", "finalize"]),
    ],
)
def test_each_stage_switched_off(db_path: Path, stages_on: str, scripts: dict, expected: list[str]) -> None:
    out, _ = run(db_path, scripts, RouteConfig(nc_verdict="nc" in scripts).with_stages(stages_on))
    assert stages(out) == expected
    assert out["result"]["ok"]


def test_sl_off_generates_on_full_schema(db_path: Path) -> None:
    out, llm = run(db_path, {"ts": [fence(SQL_FRENCH)]}, RouteConfig().with_stages(""))
    assert "CREATE TABLE stadium" in llm.calls[0][1]
    assert entry(out, "generate")["schema_tables"] == "full"


def test_cw_off_falls_back_to_executable_draft(db_path: Path) -> None:
    out, _ = run(
        db_path,
        {
            "sl": ['{"singer": ["name"]}'],
            "ts": [fence(SQL_FRENCH), fence("SELECT nme FROM singer")],
            "nc_repair": ["I cannot fix it."],
        },
        RouteConfig(continuation_writing=False),
    )
    final = entry(out, "finalize")
    assert final["fallback"] and final["winner"] == "schema_link"
    assert out["sql"] == SQL_FRENCH and out["result"]["ok"]


def test_fallback_can_be_switched_off(db_path: Path) -> None:
    out, _ = run(
        db_path,
        {
            "sl": ['{"singer": ["name"]}'],
            "ts": [fence(SQL_FRENCH), fence("SELECT nme FROM singer")],
            "nc_repair": ["I cannot fix it."],
        },
        RouteConfig(continuation_writing=False, fallback_to_executable=False),
    )
    assert out["sql"] == "SELECT nme FROM singer" and not out["result"]["ok"]
    assert "nme" in out["result"]["error"]


def test_context_overrides_build_config_per_run(db_path: Path) -> None:
    out, _ = run(db_path, {"ts": [fence(SQL_FRENCH)]}, RouteConfig(), context=RouteConfig().with_stages(""))
    assert stages(out) == ["generate", "finalize"]


def test_answer_without_sql_does_not_crash(db_path: Path) -> None:
    out, _ = run(
        db_path,
        {
            "sl": ["I cannot tell."],
            "ts": ["Sorry, I do not know.", "No idea."],
            "nc_repair": ["Hmm.", "Nope.", "No.", "Really no idea.", "None."],  # NC's repair, then rescue's 4 samples
            "cw": ["Still no idea."],
        },
    )
    assert stages(out) == ["schema_link", "generate", "noise_correct", "continue_write", "rescue", "finalize"]
    assert entry(out, "schema_link")["fallback_full_schema"]
    assert not out["result"]["ok"] and "no SQL" in out["result"]["error"]


def test_hostile_model_sql_never_touches_the_database(db_path: Path) -> None:
    before = hashlib.sha256(db_path.read_bytes()).hexdigest()
    out, _ = run(
        db_path,
        {
            "sl": ['{"singer": ["name"]}'],
            "ts": [fence("DROP TABLE singer"), fence("DELETE FROM singer")],
            "nc_repair": [fence("UPDATE singer SET name = 'x'")]  # NC's repair, then rescue's samples
            + [fence("DELETE FROM singer"), fence("ATTACH DATABASE 'x.db' AS x"), fence("DROP TABLE stadium"),
               fence("PRAGMA writable_schema = 1")],
            "cw": [fence("WITH x AS (SELECT 1) DELETE FROM singer")],
        },
    )
    assert hashlib.sha256(db_path.read_bytes()).hexdigest() == before
    assert all(not e.get("executed") for e in out["trace"] if e["stage"] != "finalize")
    assert not out["result"]["ok"]


def test_stream_updates_show_each_stage(db_path: Path) -> None:
    llm = ScriptedChatModel(
        scripts={
            "sl": ['{"singer": ["name"]}'],
            "ts": [fence(SQL_FRENCH), fence(SQL_FRENCH)],
            "nc": ["The SQL is correct."],
        }
    )
    graph = build_route_graph(llm, db_path)
    names = [next(iter(chunk)) for chunk in graph.stream({"question": "q"}, stream_mode="updates")]
    assert names == ["new_question", "schema_link", "generate", "noise_correct", "finalize", "respond"]


def test_mermaid_shows_nodes_and_conditional_edges(db_path: Path) -> None:
    graph = build_route_graph(ScriptedChatModel(scripts={}), db_path)
    mermaid = graph.get_graph().draw_mermaid()
    for node in (
        "new_question", "rewrite_question", "schema_link", "generate", "noise_correct", "continue_write",
        "rescue", "finalize", "review", "respond",
    ):
        assert f"\t{node}(" in mermaid
    for edge in (
        "__start__ --> new_question",
        "new_question -.-> rewrite_question",
        "new_question -.-> schema_link",
        "new_question -.-> generate",
        "rewrite_question -.-> schema_link",
        "rewrite_question -.-> generate",
        "generate -.-> noise_correct",
        "generate -.-> continue_write",
        "noise_correct -.-> continue_write",
        "noise_correct -.-> finalize",
        "noise_correct -.-> rescue",
        "continue_write -.-> rescue",
        "continue_write -.-> finalize",
        "rescue --> finalize",
        "finalize -.-> review",
        "finalize -.-> respond",
        "review --> respond",
        "respond --> __end__",
    ):
        assert edge in mermaid, mermaid


def test_stages_names_every_node_once(db_path: Path) -> None:
    """``STAGES`` is the one list of node ids: the compiled graph has exactly its nodes (those of
    no extra in its order, the extras' when they are built in), and every router can only go to
    one of them."""
    from typing import Literal, get_args, get_origin, get_type_hints

    from route_graph.graph.extras import EXTRAS
    from route_graph.graph.routes import Routes
    from route_graph.graph.stages import CORE_STAGES, STAGE_ALIASES, STAGES

    graph = build_route_graph(ScriptedChatModel(scripts={}), db_path)
    assert [n for n in graph.get_graph().nodes if not n.startswith("__")] == [s.node for s in CORE_STAGES]
    nodes = [s.node for s in STAGES]
    every = build_route_graph(ScriptedChatModel(scripts={}), db_path, extras=list(EXTRAS))
    assert sorted(n for n in every.get_graph().nodes if not n.startswith("__")) == sorted(nodes)
    assert len(set(nodes)) == len(nodes)
    assert STAGE_ALIASES == ("sl", "nc", "cw", "rescue")

    def literals(tp: object) -> list[object]:
        return list(get_args(tp)) if get_origin(tp) is Literal else [v for a in get_args(tp) for v in literals(a)]

    for name in [n for n in vars(Routes) if n.startswith("route")]:
        targets = literals(get_type_hints(getattr(Routes, name))["return"])
        assert targets and set(targets) <= set(nodes), (name, targets)


def test_hint_reaches_every_prompt(db_path: Path) -> None:
    llm = ScriptedChatModel(
        scripts={"sl": ['{"singer": ["name"]}'], "ts": [fence(SQL_FRENCH)] * 2, "nc": ["The SQL is correct."]}
    )
    build_route_graph(llm, db_path).invoke({"question": "q", "hint": "France means country = 'France'"})
    assert all("Hint: France means" in prompt for _, prompt in llm.calls)


class ContinuingChatModel(ScriptedChatModel):
    """A scripted model that continues a prefilled assistant message, like vLLM or in-process."""

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        assert messages[-1].type == "ai", "every stage of this graph should prefill its answer"
        self.prefills.append(str(messages[-1].content))
        return super()._generate(messages[:-1], stop, run_manager, **kwargs)

    @property
    def prefills(self) -> list[str]:
        return self.__dict__.setdefault("_prefills", [])


def test_answers_are_prefilled_and_joined(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from route_graph.graph import calls

    monkeypatch.setattr(calls, "continuing_model", lambda llm: llm if isinstance(llm, ContinuingChatModel) else None)
    llm = ContinuingChatModel(
        scripts={
            "sl": ['"singer": ["name", "country"]}'],  # continues "{"
            "ts": ["SELECT name FROM singer\n```", "SELECT nme FROM singer\n```"],
            "cw": [" name FROM singer WHERE country = 'France'\n```"],  # continues "```sql\nSELECT"
        }
    )
    graph = build_route_graph(llm, db_path, RouteConfig(noise_correction=False))
    out = graph.invoke({"question": "Which singers are from France?"})
    assert sorted(llm.prefills) == sorted(['{"', "```sql\n", "```sql\n", "```sql\nSELECT"])
    assert out["links"] == {"singer": ["name", "country"]}
    assert out["sql_by_stage"]["draft"] == "SELECT name FROM singer"
    assert entry(out, "generate")["proposed_sql"] == "SELECT nme FROM singer"
    assert out["sql"] == SQL_FRENCH and out["stage"] == "continue_write"


def test_prefill_can_be_switched_off(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from route_graph.graph import calls

    monkeypatch.setattr(calls, "continuing_model", lambda llm: llm)
    out, llm = run(
        db_path,
        {"sl": ['{"singer": ["name"]}'], "ts": [fence("SELECT name FROM singer"), fence(SQL_FRENCH)]},
        RouteConfig(noise_correction=False, continuation_writing=False, answer_prefill=False),
    )
    assert out["sql"] == SQL_FRENCH


class _FailingChatModel(ScriptedChatModel):
    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        raise RuntimeError("This model's maximum context length is 2048 tokens. However, you requested 2400 tokens")


def test_backend_failure_is_one_clear_model_error(db_path: Path) -> None:
    from route_graph.errors import ModelError

    graph = build_route_graph(_FailingChatModel(scripts={}), db_path)
    with pytest.raises(ModelError, match="--max-model-len"):
        graph.invoke({"question": "Which singers are from France?"})


# ------------------------------------------------------------------ issue 12: stages that pay
SQL_ALL = "SELECT name FROM singer"
SQL_OVER_40 = "SELECT name FROM singer WHERE age > 40"  # same rows as SQL_FRENCH, other SQL
SQL_BAD_ALIAS = (
    "SELECT T2.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
    "WHERE T1.country = 'France'"
)


def test_nc_repairs_failing_sql_without_asking_a_verdict(db_path: Path) -> None:
    out, llm = run(
        db_path,
        {
            "sl": ['{"singer": ["name"]}'],
            "ts": [fence(SQL_ALL), fence("SELECT nme FROM singer")],
            "nc_repair": [fence(SQL_FRENCH)],
        },
    )
    nc = entry(out, "noise_correct")
    assert nc["mode"] == "repair" and nc["problem"] == "error" and nc["accepted"] and nc["executed"]
    assert "nc" not in llm.tasks()
    repair_prompt = next(p for t, p in llm.calls if t == "nc_repair")
    assert "no such column: nme" in repair_prompt and "SELECT nme FROM singer" not in repair_prompt
    assert "CREATE TABLE stadium" in repair_prompt  # the full schema
    assert out["sql"] == SQL_FRENCH and out["stage"] == "noise_correct"


def test_nc_repair_that_fails_is_not_taken(db_path: Path) -> None:
    out, _ = run(
        db_path,
        {
            "sl": ['{"singer": ["name"]}'],
            "ts": [fence(SQL_FRENCH), fence("SELECT nme FROM singer")],
            "nc_repair": [fence("SELECT nationality FROM singer")],
        },
        RouteConfig(continuation_writing=False, vote=False),
    )
    nc = entry(out, "noise_correct")
    assert nc["mode"] == "repair" and not nc["accepted"] and nc["executed"] is False
    assert "nationality" in nc["error"]
    assert out["sql_by_stage"]["noise_correct"] == "SELECT nme FROM singer"


@pytest.mark.parametrize(
    ("generated", "repaired", "problem", "accepted"),
    [
        ("SELECT name FROM singer WHERE country = 'Spain'", SQL_FRENCH, "empty", True),
        ("SELECT name FROM singer WHERE country = 'Spain'", "SELECT name FROM singer WHERE country = 'Peru'", "empty", False),
        ("SELECT max(age) FROM singer WHERE country = 'Spain'", "SELECT max(age) FROM singer", "null", True),
        ("SELECT max(age) FROM singer WHERE country = 'Spain'", "SELECT min(age) FROM singer WHERE age > 99", "null", False),
    ],
)
def test_nc_repairs_empty_or_null_results_only_with_rows(
    db_path: Path, generated: str, repaired: str, problem: str, accepted: bool
) -> None:
    out, llm = run(
        db_path,
        {"ts": [fence(generated)], "nc_repair": [fence(repaired)]},
        RouteConfig(schema_linking=False, continuation_writing=False, vote=False),
    )
    nc = entry(out, "noise_correct")
    assert nc["mode"] == "repair" and nc["problem"] == problem and nc["executed"]
    assert nc["accepted"] is accepted
    assert out["sql"] == (repaired if accepted else generated)
    assert "The result is empty." in llm.calls[-1][1] or "NULL in every row" in llm.calls[-1][1]


def test_nc_repair_off_asks_a_verdict_on_failing_sql(db_path: Path) -> None:
    out, llm = run(
        db_path,
        {
            "ts": [fence("SELECT nme FROM singer")],
            "nc": ["The SQL is incorrect. The correct SQL is:\n" + fence(SQL_FRENCH)],
        },
        RouteConfig(schema_linking=False, continuation_writing=False, nc_repair=False),
    )
    nc = entry(out, "noise_correct")
    assert nc["mode"] == "verdict" and nc["verdict"] == "incorrect" and nc["accepted"]
    assert "nc_repair" not in llm.tasks()


def test_nc_verdict_on_sql_with_rows(db_path: Path) -> None:
    out, llm = run(
        db_path,
        {"ts": [fence(SQL_FRENCH)], "nc": ["The SQL executes without error and answers the question."]},
        RouteConfig(schema_linking=False),
    )
    nc = entry(out, "noise_correct")
    assert nc["mode"] == "verdict" and nc["verdict"] == "correct" and not nc["accepted"]
    assert llm.tasks() == ["ts", "nc"]


@pytest.mark.parametrize(("full", "expected"), [(True, "full"), (False, "reduced")])
def test_cw_schema_full_or_reduced(db_path: Path, full: bool, expected: str) -> None:
    out, llm = run(
        db_path,
        {
            "sl": ['{"singer": ["name"]}'],
            "ts": [fence("SELECT nme FROM singer"), fence("SELECT nme FROM singer")],
            "nc_repair": ["I cannot fix it."],
            "cw": [fence("name FROM singer WHERE country = 'France'")],
        },
        RouteConfig(cw_full_schema=full),
    )
    cw_prompt = next(p for t, p in llm.calls if t == "cw")
    assert ("CREATE TABLE stadium" in cw_prompt) is full
    assert entry(out, "continue_write")["schema"] == expected and entry(out, "continue_write")["accepted"]


def test_vote_majority_outvotes_a_later_stage(db_path: Path) -> None:
    out, _ = run(
        db_path,
        {
            "sl": ['{"singer": ["name"]}'],
            "ts": [fence(SQL_ALL), fence(SQL_ALL)],
            "nc": ["The SQL is incorrect. The correct SQL is:\n" + fence(SQL_FRENCH)],
        },
    )
    assert entry(out, "noise_correct")["accepted"]
    final = entry(out, "finalize")
    assert final["vote"]["groups"] == [
        {"stages": ["draft", "generate"], "size": 2, "rows": 3, "empty": False},
        {"stages": ["noise_correct"], "size": 1, "rows": 2, "empty": False},
    ]
    assert final["vote"]["winner"] == "generate" and final["changed"] and "fallback" not in final
    assert out["sql"] == SQL_ALL and out["stage"] == "generate" and out["result"]["row_count"] == 3


def test_vote_groups_different_sql_by_their_results(db_path: Path) -> None:
    out, _ = run(
        db_path,
        {
            "sl": ['{"singer": ["name"]}'],
            "ts": [fence(SQL_OVER_40), fence(SQL_ALL)],
            "nc": ["The SQL is incorrect. The correct SQL is:\n" + fence(SQL_FRENCH)],
        },
    )
    final = entry(out, "finalize")
    assert [g["stages"] for g in final["vote"]["groups"]] == [["draft", "noise_correct"], ["generate"]]
    assert final["vote"]["winner"] == "noise_correct" and "changed" not in final
    assert out["sql"] == SQL_FRENCH and out["stage"] == "noise_correct"


def test_vote_tie_goes_to_the_latest_stage(db_path: Path) -> None:
    out, _ = run(
        db_path,
        {"sl": ['{"singer": ["name"]}'], "ts": [fence(SQL_FRENCH), fence(SQL_ALL)], "nc": ["The SQL is correct."]},
    )
    final = entry(out, "finalize")
    assert [g["stages"] for g in final["vote"]["groups"]] == [["generate"], ["draft"]]
    assert final["vote"]["winner"] == "generate" and final["winner"] == "generate"
    assert out["sql"] == SQL_ALL


def test_vote_tie_empty_result_loses_to_rows(db_path: Path) -> None:
    empty_sql = "SELECT name FROM singer WHERE country = 'Spain'"
    out, _ = run(
        db_path,
        {"sl": ['{"singer": ["name"]}'], "ts": [fence(SQL_FRENCH), fence(empty_sql)]},
        RouteConfig(noise_correction=False),
    )
    final = entry(out, "finalize")
    assert final["vote"]["groups"] == [
        {"stages": ["draft"], "size": 1, "rows": 2, "empty": False},
        {"stages": ["generate"], "size": 1, "rows": 0, "empty": True},
    ]
    assert final["winner"] == "schema_link" and final["changed"]
    assert out["sql"] == SQL_FRENCH and out["stage"] == "schema_link"


def test_vote_off_keeps_the_pipeline_answer(db_path: Path) -> None:
    out, _ = run(
        db_path,
        {"sl": ['{"singer": ["name"]}'], "ts": [fence(SQL_FRENCH), fence(SQL_ALL)], "nc": ["The SQL is correct."]},
        RouteConfig(vote=False),
    )
    assert "vote" not in entry(out, "finalize") and out["sql"] == SQL_ALL


def test_generate_requalifies_a_wrong_alias_before_nc(db_path: Path) -> None:
    fixed = SQL_BAD_ALIAS.replace("T2.name", "T1.name")
    out, llm = run(
        db_path,
        {"sl": ['{"singer": ["name"]}'], "ts": [fence(SQL_FRENCH), fence(SQL_BAD_ALIAS)], "nc": ["The SQL is correct."]},
    )
    gen = entry(out, "generate")
    assert gen["proposed_sql"] == SQL_BAD_ALIAS and not gen["executed"] and "T2.name" in gen["error"]
    assert gen["requalified"]["sql"] == fixed and gen["requalified"]["accepted"] and gen["requalified"]["rows"] == 2
    assert out["sql_by_stage"]["generate"] == fixed and out["sql"] == fixed
    assert fixed in next(p for t, p in llm.calls if t == "nc")  # NC judged the repaired SQL


def test_generate_turns_a_double_quoted_literal_into_a_string_on_duckdb(tmp_path: Path) -> None:
    """SQLite reads "France" as a string; DuckDB (like PostgreSQL) as a column, and fails."""
    quoted = SQL_FRENCH.replace("'France'", '"France"')
    out, llm = run(
        make_singer_duckdb(tmp_path / "concert.duckdb"),
        {"ts": [fence(quoted)]},
        RouteConfig(schema_linking=False, continuation_writing=False),
    )
    gen = entry(out, "generate")
    assert gen["proposed_sql"] == quoted and not gen["executed"] and "France" in gen["error"]
    assert gen["requalified"]["sql"] == SQL_FRENCH and gen["requalified"]["accepted"]
    assert out["sql"] == SQL_FRENCH and sorted(r[0] for r in out["result"]["rows"]) == ["Edith", "Jacques"]
    assert llm.tasks() == ["ts"]  # no model call was needed to repair it


def test_requalify_leaves_an_ambiguous_column_to_the_model(db_path: Path) -> None:
    ambiguous = (
        "SELECT T2.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
        "JOIN concert AS T3 ON T2.concert_id = T3.concert_id JOIN stadium AS T4 ON T3.stadium_id = T4.stadium_id"
    )
    out, _ = run(
        db_path,
        {"ts": [fence(ambiguous)], "nc_repair": [fence(SQL_FRENCH)]},
        RouteConfig(schema_linking=False, continuation_writing=False),
    )
    assert "requalified" not in entry(out, "generate")
    assert entry(out, "noise_correct")["accepted"] and out["sql"] == SQL_FRENCH


def test_requalify_can_be_switched_off(db_path: Path) -> None:
    out, llm = run(
        db_path,
        {"ts": [fence(SQL_BAD_ALIAS)], "nc_repair": [fence(SQL_FRENCH)]},
        RouteConfig(schema_linking=False, continuation_writing=False, requalify_columns=False),
    )
    assert "requalified" not in entry(out, "generate") and llm.tasks() == ["ts", "nc_repair"]


def test_nc_verdict_off_asks_nothing_about_sql_that_returns_rows(db_path: Path) -> None:
    # No "nc" script line: a verdict call would find none and fail the run's every-line check.
    out, llm = run(
        db_path,
        {"sl": ['{"singer": ["name", "country"]}'], "ts": [fence("SELECT name FROM singer"), fence(SQL_FRENCH)]},
        RouteConfig(nc_verdict=False),
    )
    nc = entry(out, "noise_correct")
    assert nc["mode"] == "skipped" and nc["llm_calls"] == 0
    assert [task for task, _ in llm.calls].count("nc") == 0
    assert out["sql"] == SQL_FRENCH and out["sql_by_stage"]["noise_correct"] == SQL_FRENCH


class _SLAnswerUnreadable(ScriptedChatModel):
    """The SL call fails the way an OpenAI-compatible server does when JSON-schema decoding hits
    the token limit (openai.LengthFinishReasonError, a plain Exception for the graph)."""

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        if task_of(messages) == "sl":
            raise ValueError("Could not parse response content as the length limit was reached")
        return super()._generate(messages, stop, run_manager, **kwargs)


def test_an_unreadable_sl_answer_falls_back_to_the_draft_links(db_path: Path) -> None:
    llm = _SLAnswerUnreadable(scripts={"ts": [fence(SQL_FRENCH), fence(SQL_FRENCH)]})
    out = build_route_graph(llm, db_path).invoke({"question": "Which singers are from France?"})
    sl = entry(out, "schema_link")
    assert "length limit" in sl["links_error"] and sl["model_links"] == {}
    assert out["links"] == {"singer": ["name", "country"]}  # from the draft SQL
    assert out["sql"] == SQL_FRENCH and out["result"]["ok"]
