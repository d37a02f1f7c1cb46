"""Self-consistency (the ``self_consistency`` extra): K sampled generations fanned out with ``Send``
and voted on by execution agreement in finalize, with a scripted model that records temperatures.

The K samples run concurrently, so which scripted answer each sample gets is not fixed: the
tests script answers whose outcome does not depend on that order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from route_graph import ConfigError, RouteConfig, build_route_graph
from route_graph.cli import format_trace
from route_graph.graph.context import MAX_SELF_CONSISTENCY
from route_graph.graph.extras import SelfConsistency, parse_overrides
from route_graph.graph.self_consistency import SAMPLE_STAGE
from tests.fakes import RAISE, SamplingChatModel, make_concert_db

SQL_UK = "SELECT name FROM singer WHERE country = 'UK'"  # 1 row: Adele
SQL_FRANCE = "SELECT name FROM singer WHERE country = 'France'"  # 2 rows: Edith, Jacques
SQL_FRANCE_SORTED = "SELECT name FROM singer WHERE country = 'France' ORDER BY age"  # same result
SQL_NOBODY = "SELECT name FROM singer WHERE country = 'Peru'"  # no rows
SQL_BROKEN = "SELECT nme FROM singer"  # no such column: never executes
GENERATE_ONLY = RouteConfig().with_stages("")  # generate + finalize: the samples are the only other candidates


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    return make_concert_db(tmp_path / "concert.sqlite")


def fence(sql: str) -> str:
    return f"```sql\n{sql}\n```"


def run(
    db_path: Path, ts: list[str], config: RouteConfig, samples: int, **scripts: list[str]
) -> tuple[dict, SamplingChatModel]:
    """One question with ``samples`` samples; ``ts`` holds generate's answer first (after the
    draft's, with linking on), then the samples'."""
    llm = SamplingChatModel(scripts={"ts": [fence(s) if s != RAISE else s for s in ts], **scripts})
    graph = build_route_graph(llm, db_path, config, extras=[SelfConsistency(samples)])
    out = graph.invoke({"question": "Which singers are from France?"})
    assert all(not lines for lines in llm.scripts.values()), llm.scripts  # every scripted answer was asked for
    return out, llm


def stages(out: dict) -> list[str]:
    return [e["stage"] for e in out["trace"]]


def entry(out: dict, stage: str) -> dict:
    return next(e for e in out["trace"] if e["stage"] == stage)


def names(rows: list[list]) -> list[str]:
    return sorted(r[0] for r in rows)


def test_off_by_default_makes_no_extra_calls(db_path: Path) -> None:
    llm = SamplingChatModel(scripts={"sl": ['{"singer": ["name", "country"]}'], "ts": [fence(SQL_UK), fence(SQL_FRANCE)]})
    graph = build_route_graph(llm, db_path)
    nodes = [next(iter(chunk)) for chunk in graph.stream({"question": "q"}, stream_mode="updates")]
    assert nodes == ["new_question", "schema_link", "generate", "noise_correct", "finalize", "respond"]
    assert sorted(llm.tasks()) == ["sl", "ts", "ts"]
    assert all(temperature is None for _, temperature in llm.temperatures)  # greedy calls name no temperature
    assert "samples" not in graph.channels and "sample_generate" not in graph.nodes


def test_samples_need_the_vote(db_path: Path) -> None:
    out, llm = run(db_path, [SQL_UK], GENERATE_ONLY.override({"vote": False}), 3)
    assert stages(out) == ["generate", "finalize"] and llm.tasks() == ["ts"]


def test_k_samples_are_k_calls_at_the_temperature_on_generates_prompt(db_path: Path) -> None:
    config = RouteConfig(noise_correction=False, continuation_writing=False, sample_temperature=0.3)
    out, llm = run(
        db_path, [SQL_UK, SQL_FRANCE, SQL_FRANCE, SQL_FRANCE, SQL_FRANCE], config, 3, sl=['{"singer": ["name", "country"]}']
    )
    assert stages(out) == ["schema_link", "generate", SAMPLE_STAGE, "finalize"]
    assert sorted(llm.tasks()) == ["sl"] + ["ts"] * 5  # draft, generate, 3 samples
    assert sorted(t for _, t in llm.temperatures if t is not None) == [0.3, 0.3, 0.3]
    assert sum(t is None for _, t in llm.temperatures) == 3  # SL, draft and generate stay greedy
    ts_prompts = [p for task, p in llm.calls if task == "ts"]
    generate_prompt = ts_prompts[1]  # the draft (full schema) comes first, with SL
    assert "CREATE TABLE stadium" in ts_prompts[0] and "CREATE TABLE stadium" not in generate_prompt
    assert ts_prompts[2:] == [generate_prompt] * 3
    sampling = entry(out, SAMPLE_STAGE)
    assert sampling["samples"] == 3 and sampling["executed_samples"] == 3 and sampling["distinct_results"] == 1
    assert sampling["temperature"] == 0.3 and sampling["llm_calls"] == 3 and sampling["failed_calls"] == 0
    assert [p["name"] for p in sampling["proposals"]] == ["sample1", "sample2", "sample3"]


def test_majority_of_samples_beats_generate(db_path: Path) -> None:
    out, _ = run(db_path, [SQL_UK, SQL_FRANCE, SQL_FRANCE_SORTED, SQL_BROKEN], GENERATE_ONLY, 3)
    assert out["result"]["ok"] and names(out["result"]["rows"]) == ["Edith", "Jacques"]
    assert out["sql"] in (SQL_FRANCE, SQL_FRANCE_SORTED) and out["stage"] == SAMPLE_STAGE
    final = entry(out, "finalize")
    assert final["winner"] == SAMPLE_STAGE and final["changed"]
    groups = final["vote"]["groups"]
    assert len(groups[0]["stages"]) == 2 and all(s.startswith("sample") for s in groups[0]["stages"])
    assert groups[1]["stages"] == ["generate"] and final["vote"]["samples"] == 2  # the broken one is no candidate
    assert entry(out, SAMPLE_STAGE)["distinct_results"] == 1
    # The samples sit between generate and the stages after it, whatever comes next.
    assert stages(out) == ["generate", SAMPLE_STAGE, "finalize"]


def test_a_tie_goes_to_the_greedy_answer(db_path: Path) -> None:
    out, _ = run(db_path, [SQL_UK, SQL_FRANCE], GENERATE_ONLY, 1)
    assert out["sql"] == SQL_UK and out["stage"] == "generate"
    assert entry(out, "finalize")["vote"]["groups"][0]["stages"] == ["generate"]


def test_a_tie_goes_to_a_non_empty_result_first(db_path: Path) -> None:
    out, _ = run(db_path, [SQL_NOBODY, SQL_FRANCE], GENERATE_ONLY, 1)
    assert out["sql"] == SQL_FRANCE and out["stage"] == SAMPLE_STAGE


def test_failing_samples_never_win(db_path: Path) -> None:
    out, _ = run(db_path, [SQL_UK, SQL_BROKEN, SQL_BROKEN, SQL_BROKEN], GENERATE_ONLY, 3)
    assert out["sql"] == SQL_UK and out["stage"] == "generate"
    assert "samples" not in entry(out, "finalize")["vote"]
    sampling = entry(out, SAMPLE_STAGE)
    assert sampling["executed_samples"] == 0 and sampling["distinct_results"] == 0
    assert all("no such column" in p["error"] for p in sampling["proposals"])


def test_an_executing_sample_rescues_a_failing_generate(db_path: Path) -> None:
    out, _ = run(db_path, [SQL_BROKEN, SQL_FRANCE, SQL_BROKEN], GENERATE_ONLY, 2)
    assert out["sql"] == SQL_FRANCE and out["stage"] == SAMPLE_STAGE
    assert entry(out, "finalize").get("fallback") is True


def test_a_failing_model_call_loses_one_sample_only(db_path: Path) -> None:
    out, llm = run(db_path, [SQL_UK, SQL_FRANCE, RAISE, SQL_FRANCE], GENERATE_ONLY, 3)
    assert names(out["result"]["rows"]) == ["Edith", "Jacques"] and out["stage"] == SAMPLE_STAGE
    sampling = entry(out, SAMPLE_STAGE)
    assert sampling["failed_calls"] == 1 and sampling["samples"] == 3 and sampling["executed_samples"] == 2
    assert sampling["llm_calls"] == 2  # the failed call answered nothing
    failed = [p for p in sampling["proposals"] if p.get("model_error")]
    assert len(failed) == 1 and "scripted sampling failure" in failed[0]["model_error"] and failed[0]["sql"] is None
    assert len(llm.calls) == 4
    assert "1 failed call(s)" in format_trace(out["trace"])


def test_samples_of_one_question_do_not_reach_the_next(db_path: Path) -> None:
    llm = SamplingChatModel(
        scripts={"ts": [fence(s) for s in (SQL_UK, SQL_FRANCE, SQL_FRANCE, SQL_UK, SQL_BROKEN, SQL_BROKEN, SQL_UK)]}
    )
    graph = build_route_graph(llm, db_path, GENERATE_ONLY, extras=[SelfConsistency(2)], checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "sc"}}
    first = graph.invoke({"question": "Which singers are from France?"}, thread)
    assert first["sql"] == SQL_FRANCE and first["stage"] == SAMPLE_STAGE
    # Same thread, samples that do not execute: question 1's two France samples would outvote generate.
    second = graph.invoke({"question": "Which singers are from the UK?"}, thread)
    assert second["sql"] == SQL_UK and second["stage"] == "generate"
    assert [g["stages"] for g in entry(second, "finalize")["vote"]["groups"]] == [["generate"]]
    assert [p["name"] for p in graph.get_state(thread).values["samples"]] == ["sample1", "sample2"]
    # A run with the vote off draws none, and keeps none from the last question.
    third = graph.invoke({"question": "Which singers are from the UK?"}, thread, context={"vote": False})
    assert third["sql"] == SQL_UK and stages(third) == ["generate", "finalize"]
    assert graph.get_state(thread).values["samples"] == []
    assert not llm.scripts["ts"]


def test_samples_are_prefilled_like_generate(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from route_graph.graph import calls

    monkeypatch.setattr(calls, "continuing_model", lambda llm: llm)  # every call continues "```sql\n"
    out, llm = run(db_path, [SQL_UK, SQL_FRANCE, SQL_FRANCE], GENERATE_ONLY, 2)
    assert all(prompt == "```sql\n" for _, prompt in llm.calls)  # the prefill is the last message
    assert sorted(t for _, t in llm.temperatures if t is not None) == [0.7, 0.7]
    assert out["sql"] == SQL_FRANCE


def test_cli_trace_shows_the_sampling_line(db_path: Path) -> None:
    out, _ = run(db_path, [SQL_UK, SQL_FRANCE, SQL_BROKEN], GENERATE_ONLY, 2)
    text = format_trace(out["trace"])
    assert "self_consistency 2 samples at temperature 0.7: 1 execute, 1 distinct result(s)  [2 call(s)" in text
    assert f"sample1 (executes): {SQL_FRANCE}" in text or f"sample2 (executes): {SQL_FRANCE}" in text
    assert "vote: generate: 1 rows | sample" in text or "vote: sample" in text


@pytest.mark.parametrize("samples", [0, -1, MAX_SELF_CONSISTENCY + 1, True])
def test_samples_are_checked(samples: int) -> None:
    with pytest.raises(ConfigError, match="SelfConsistency.samples"):
        SelfConsistency(samples)


@pytest.mark.parametrize("fields", [{"sample_temperature": 0.0}, {"sample_temperature": -0.5}])
def test_config_is_checked(fields: dict) -> None:
    with pytest.raises(ConfigError):
        RouteConfig(**fields)


def test_the_command_line_builds_the_extra_from_its_former_field() -> None:
    values, extras = parse_overrides(["self_consistency=4", "sample_temperature=0.5"])
    assert values == {"sample_temperature": 0.5} and extras == (SelfConsistency(4),)
    assert parse_overrides(["self_consistency=0"]) == ({}, ())
    assert "temperature" in RouteConfig.field_descriptions()["sample_temperature"]
