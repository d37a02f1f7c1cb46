"""The eval runner end to end with a scripted model: records, concurrency, resume, errors, CLI."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from route_graph.errors import ConfigError, ModelError, PromptTooLongError
from route_graph.evaluation import EvalSettings, run_eval
from route_graph.evaluation.cli import main
from route_graph.evaluation.runner import seed_run
from route_graph.evaluation.summary import read_predictions
from route_graph.graph.extras import ValueRetrieval
from tests.fakes import make_concert_db, task_of

FIXTURES = Path(__file__).parent / "fixtures"


def fence(sql: str) -> str:
    return f"```sql\n{sql}\n```"


NC_OK = "The SQL is correct."
THREE_TABLES = (
    "SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
    "JOIN concert AS T3 ON T2.concert_id = T3.concert_id WHERE T3.year = 2014"
)
# Per question (tests/fixtures/concert_spider.json), per task: what the scripted model answers.
ANSWERS: dict[str, dict[str, str]] = {
    "How many singers are there?": {"sl": '{"singer": ["singer_id"]}', "ts": fence("SELECT count(*) FROM singer")},
    "Which singers are from France?": {  # fails to execute, NC repairs it
        "sl": '{"singer": ["name", "country"]}',
        "ts": fence("SELECT name FROM singers"),
        "nc_repair": fence("SELECT name FROM singer WHERE country = 'France'"),
    },
    "List singer names from oldest to youngest.": {"sl": '{"singer": ["name", "age"]}', "ts": fence("SELECT name FROM singer ORDER BY age")},
    "What is the average singer age?": {"sl": '{"singer": ["age"]}', "ts": fence("SELECT sum(age) * 1.0 / count(*) FROM singer")},
    "Which singers performed in 2014?": {  # fails to execute, CW fixes it
        "sl": '{"singer": ["name"], "concert": ["year"]}',
        "ts": fence("SELECT name FROM singer WHERE year = 2014"),
        "cw": fence(THREE_TABLES),
    },
    "What is the name of the stadium with the most capacity?": {
        "sl": '{"stadium": ["name", "capacity"]}',
        "ts": fence("SELECT name FROM stadium ORDER BY capacity DESC LIMIT 1"),
    },
    "A question whose gold SQL is broken.": {"sl": "{}", "ts": fence("SELECT name FROM singer")},
    # BIRD fixture
    "How many French singers are there?": {"sl": '{"singer": ["country"]}', "ts": fence("SELECT count(*) FROM singer WHERE country = 'France'")},
    "Name the stadiums that hosted a concert in 2015.": {"sl": '{"stadium": ["name"]}', "ts": fence("SELECT name FROM stadium")},
}


class KeyedChatModel(BaseChatModel):
    """Answers by (question, task), so concurrent questions get their own answers in any order."""

    answers: dict[str, dict[str, str]]
    fail_on: dict[str, BaseException] = Field(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _calls: list[tuple[str, str]] = PrivateAttr(default_factory=list)
    _prompts: list[str] = PrivateAttr(default_factory=list)

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @property
    def _llm_type(self) -> str:
        return "keyed-fake"

    @property
    def calls(self) -> list[tuple[str, str]]:
        return list(self._calls)

    @property
    def prompts(self) -> list[str]:
        return list(self._prompts)

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        text = str(messages[-1].content)
        task = task_of(messages)
        question = next(q for q in self.answers if f"Question: {q}" in text)
        with self._lock:
            self._calls.append((question, task))
            self._prompts.append(text)
        if question in self.fail_on:
            raise self.fail_on[question]
        answer = self.answers[question].get(task, NC_OK if task in ("nc", "nc_repair") else fence("SELECT 1"))
        usage = {"input_tokens": len(text.split()), "output_tokens": len(answer.split()), "total_tokens": 0}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=answer, usage_metadata=usage))])


def model(**kw: Any) -> KeyedChatModel:
    return KeyedChatModel(answers=ANSWERS, **kw)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "database" / "concert").mkdir(parents=True)
    make_concert_db(root / "database" / "concert" / "concert.sqlite")
    shutil.copy(FIXTURES / "concert_spider.json", root / "dev.json")
    shutil.copy(FIXTURES / "concert_bird.json", root / "bird_dev.json")
    return root


def settings(data: Path, **kw: Any) -> EvalSettings:
    return EvalSettings(**{"data": str(data), "split": "dev.json", "model": "keyed-fake", **kw})


def by_id(out: Path) -> dict[int, dict]:
    return {r["id"]: r for r in read_predictions(out / "predictions.jsonl")}


def test_mcp_run_end_to_end(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_eval(settings(data, concurrency=3), out, llm=model(), progress=False)
    records = by_id(out)
    assert sorted(records) == list(range(7)) and result.new_questions == 7
    assert [records[i]["status"] for i in range(7)] == ["correct", "correct", "wrong", "correct", "correct", "correct", "gold_error"]
    assert records[1]["winner"] == "noise_correct" and records[4]["winner"] == "continue_write"
    assert records[4]["stage_sql"]["generate"] == "SELECT name FROM singer WHERE year = 2014"
    assert records[4]["executions"]["SELECT name FROM singer WHERE year = 2014"]["executed"] is False
    assert records[4]["hardness"] == "hard" and records[0]["hardness"] == "easy"
    # SL + draft + generate; no NC verdict on SQL that returns rows (nc_verdict is off by default)
    assert records[0]["cost"]["llm_calls"] == 3 and set(records[0]["cost_by_stage"]) == {"schema_link", "generate", "noise_correct"}
    assert records[0]["link_scores"]["table_recall"] == 1.0
    overall = result.summary["overall"]
    assert (overall["scored"], overall["correct"], overall["gold_errors"]) == (6, 5, 1)
    ablation = {row["checkpoint"]: row["correct"] for row in result.summary["ablation"]}
    assert ablation == {"draft": 3, "generate": 3, "noise_correct": 4, "final": 5}
    stages = {row["stage"]: row for row in result.summary["stages"]}
    assert (stages["noise_correct"]["fixed"], stages["continue_write"]["fixed"]) == (1, 1)
    assert result.summary["throughput"][0]["questions"] == 7 and result.summary["throughput"][0]["concurrency"] == 3
    for name in ("summary.json", "report.md", "run.json", "accuracy_by_hardness.png", "accuracy_by_stage.png", "cost_by_stage.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text())["overall"]["correct"] == 5
    report = (out / "report.md").read_text()
    assert "## Per-stage attribution" in report and "![accuracy_by_hardness](accuracy_by_hardness.png)" in report


def test_single_mode_is_one_prompt_on_the_full_schema(data: Path, tmp_path: Path) -> None:
    llm = model()
    result = run_eval(settings(data, mode="single", limit=3, sample_seed=0), tmp_path / "single", llm=llm, progress=False, plots=False)
    assert {task for _, task in llm.calls} == {"ts"} and len(llm.calls) == 3
    records = list(by_id(tmp_path / "single").values())
    assert all(set(r["stage_sql"]) == {"generate", "noise_correct", "continue_write", "rescue", "final"} for r in records)
    assert all(r["link_scores"] is None for r in records)
    assert [row["variant"] for row in result.summary["ablation"]] == ["single-pass"]
    assert result.summary["linking"] is None
    with pytest.raises(ConfigError, match="--stages applies to --mode mcp"):
        settings(data, mode="single", stages="sl")


def test_resume_after_interruption(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "resume"
    # A model that crashes the process (Ctrl-C) on the 4th question, with one question in flight.
    interrupted = model(fail_on={"What is the average singer age?": KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        run_eval(settings(data), out, llm=interrupted, progress=False, plots=False)
    done = by_id(out)
    assert sorted(done) == [0, 1, 2]
    assert json.loads((out / "run.json").read_text())["sessions"][0]["questions"] == 3
    # A kill in the middle of a write leaves a torn line: it is dropped, not parsed.
    with (out / "predictions.jsonl").open("a") as handle:
        handle.write('{"id": 3, "db_id": "conc')
    llm = model()
    result = run_eval(settings(data, concurrency=2), out, llm=llm, progress=False, plots=False)
    assert result.new_questions == 4
    asked = {question for question, _ in llm.calls}
    assert asked == {q for q in ANSWERS if q in [e["question"] for e in json.loads((data / "dev.json").read_text())[3:]]}
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == list(range(7))  # no duplicates, no torn line
    sessions = json.loads((out / "run.json").read_text())["sessions"]
    assert [s["questions"] for s in sessions] == [3, 4] and result.summary["overall"]["questions"] == 7
    # Nothing left to do: a third run only rebuilds the summary (and never loads a model).
    again = run_eval(settings(data), out, llm=None, progress=False, plots=False)
    assert again.new_questions == 0 and again.summary["overall"]["correct"] == 5


def test_resume_with_other_settings_is_refused(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_eval(settings(data, limit=2), out, llm=model(), progress=False, plots=False)
    with pytest.raises(ConfigError, match=r"different settings \(limit: 2 then, 3 now"):
        run_eval(settings(data, limit=3), out, llm=model(), progress=False, plots=False)
    with pytest.raises(ConfigError, match="stages"):
        run_eval(settings(data, limit=2, stages="sl,nc"), out, llm=model(), progress=False, plots=False)
    # concurrency may change between sessions; --overwrite starts again
    assert run_eval(settings(data, limit=2, concurrency=2), out, llm=model(), progress=False, plots=False).new_questions == 0
    fresh = run_eval(settings(data, limit=3), out, llm=model(), progress=False, plots=False, overwrite=True)
    assert fresh.new_questions == 3


def test_seed_run_extends_a_stored_run_to_a_larger_sample(data: Path, tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    run_eval(settings(data, limit=3), small, llm=model(), progress=False, plots=False)
    assert seed_run(small, settings(data), large) == 3
    llm = model()
    result = run_eval(settings(data), large, llm=llm, progress=False, plots=False)
    # Only the 4 questions the small run did not answer are asked; its 3 answers are kept as they were.
    assert result.new_questions == 4 and len(llm.calls) > 0
    asked = {question for question, _ in llm.calls}
    seeded = {r["question"] for r in by_id(small).values()}
    assert not asked & seeded
    assert [by_id(large)[i] for i in by_id(small)] == list(by_id(small).values())
    assert result.summary["overall"]["questions"] == 7
    sessions = json.loads((large / "run.json").read_text())["sessions"]
    assert "seeded_from" in sessions[0] and "seeded_from" not in sessions[-1]
    # Other settings, an occupied directory, or a sample that does not contain the stored one: refused.
    with pytest.raises(ConfigError, match=r"other settings than these \(mode: 'mcp' then, 'single' now"):
        seed_run(small, settings(data, mode="single"), tmp_path / "other")
    with pytest.raises(ConfigError, match="already holds a run"):
        seed_run(small, settings(data), large)
    with pytest.raises(ConfigError, match="not in the new sample"):
        seed_run(large, settings(data, limit=3), tmp_path / "smaller")
    with pytest.raises(ConfigError, match="is not an evaluation run"):
        seed_run(tmp_path / "missing", settings(data), tmp_path / "x")


def test_a_run_recorded_before_later_fields_seeds_and_resumes_as_it_ran(data: Path, tmp_path: Path) -> None:
    """Old records name the model 'default' (then the untuned base) and lack RouteConfig fields added
    since; they still seed a larger run of the base, and a recorded value other than today's default is
    still a difference."""
    old, large = tmp_path / "old", tmp_path / "large"
    run_eval(settings(data, limit=3, model="qwen2.5-coder-0.5b"), old, llm=model(), progress=False, plots=False)
    record = json.loads((old / "run.json").read_text())
    record["settings"]["model"] = "default"
    del record["settings"]["route_config"]["constrained_json"]
    (old / "run.json").write_text(json.dumps(record))
    assert seed_run(old, settings(data, model="qwen2.5-coder-0.5b"), large) == 3
    assert run_eval(settings(data, limit=3, model="qwen2.5-coder-0.5b"), old, llm=None, progress=False,
                    plots=False).new_questions == 0  # resumes: nothing left to ask
    with pytest.raises(ConfigError, match=r"model: 'qwen2.5-coder-0.5b' then, 'qwen2.5-coder-1.5b' now"):
        seed_run(old, settings(data, model="qwen2.5-coder-1.5b"), tmp_path / "other-model")
    record["settings"]["route_config"]["constrained_json"] = False
    (old / "run.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="route_config"):
        seed_run(old, settings(data, model="qwen2.5-coder-0.5b"), tmp_path / "other-config")


def test_predictions_without_run_file_are_refused(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "orphan"
    out.mkdir()
    (out / "predictions.jsonl").write_text('{"id": 0}\n')
    with pytest.raises(ConfigError, match="no run.json"):
        run_eval(settings(data), out, llm=model(), progress=False)


def test_a_crashing_question_is_recorded_and_the_run_goes_on(data: Path, tmp_path: Path) -> None:
    llm = model(fail_on={"How many singers are there?": RuntimeError("backend hiccup")})
    result = run_eval(settings(data, limit=7), tmp_path / "r", llm=llm, progress=False, plots=False)
    crashed = by_id(tmp_path / "r")[0]
    assert crashed["status"] == "graph_error" and crashed["correct"] is False
    assert "backend hiccup" in crashed["error"]
    assert result.summary["overall"]["graph_errors"] == 1 and result.summary["overall"]["correct"] == 4


@pytest.mark.parametrize(
    "error",
    [
        PromptTooLongError("The prompt has 9000 tokens, more than the model's context of 8192"),
        # a server's context-length refusal, mapped by the graph to PromptTooLongError
        RuntimeError("Error code: 400 - This model's maximum context length is 8192 tokens"),
    ],
)
def test_a_prompt_too_long_fails_its_question_only(data: Path, tmp_path: Path, error: Exception) -> None:
    llm = model(fail_on={"How many singers are there?": error})
    result = run_eval(settings(data, limit=7), tmp_path / "r", llm=llm, progress=False, plots=False)
    failed = by_id(tmp_path / "r")[0]
    assert failed["status"] == "graph_error" and "context" in failed["error"]
    assert result.summary["overall"]["graph_errors"] == 1
    assert len(by_id(tmp_path / "r")) == 7  # the run went on past it


def test_a_broken_model_stops_the_run(data: Path, tmp_path: Path) -> None:
    llm = model(fail_on={"How many singers are there?": ModelError("weights missing")})
    with pytest.raises(ModelError):
        run_eval(settings(data), tmp_path / "r", llm=llm, progress=False, plots=False)


def test_bird_format_hint_difficulty_and_ves(data: Path, tmp_path: Path) -> None:
    llm = model()
    result = run_eval(
        EvalSettings(data=str(data), split="bird_dev.json", model="keyed-fake", ves_repeats=2, stages="sl"),
        tmp_path / "bird", llm=llm, progress=False, plots=False,
    )
    assert any("Hint: French refers to country = 'France'" in p for p in llm.prompts)
    assert not any("Hint:" in p for p in llm.prompts if "Name the stadiums that hosted" in p)  # empty evidence: no hint line
    records = by_id(tmp_path / "bird")
    assert records[0]["correct"] and records[0]["ves"] > 0 and records[1]["ves"] == 0.0
    assert records[0]["hint"] == "French refers to country = 'France'"
    summary = result.summary
    assert summary["settings"]["scoring"]["semantics"] == "bird"
    assert {row["difficulty"] for row in summary["by_difficulty"]} == {"simple", "moderate"}
    assert summary["ves"]["timed"] == 2 and summary["ves"]["ves"] > 0


def test_cli_main(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import route_graph

    monkeypatch.setattr(route_graph, "load_chat_model", lambda spec=None, **kw: model())
    out = tmp_path / "cli"
    argv = ["--data", str(data), "--split", "dev.json", "--limit", "4", "--sample-seed", "3",
            "--concurrency", "2", "--out", str(out), "--no-progress", "--no-plots"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "EX " in printed and "report.md" in printed and "full MCP" in printed
    assert len(read_predictions(out / "predictions.jsonl")) == 4
    assert main(argv + ["--stages", "sl"]) == 2
    assert "different settings" in capsys.readouterr().err
    assert main(["--data", str(data), "--split", "missing.json", "--out", str(tmp_path / "x")]) == 2
    assert "Split file" in capsys.readouterr().err


def test_mcp_draft_sends_the_single_pass_prompt(data: Path, tmp_path: Path) -> None:
    """The ablation's single-pass row is the MCP draft: it must be the very prompt --mode single sends."""
    mcp, single = model(), model()
    run_eval(settings(data, limit=4), tmp_path / "mcp", llm=mcp, progress=False, plots=False)
    run_eval(settings(data, limit=4, mode="single"), tmp_path / "single", llm=single, progress=False, plots=False)
    single_prompts = set(single.prompts)
    assert len(single_prompts) == 4 and single_prompts <= set(mcp.prompts)


def test_empty_selection_writes_an_empty_report(data: Path, tmp_path: Path) -> None:
    result = run_eval(settings(data, limit=0), tmp_path / "empty", llm=None, progress=False)
    assert result.new_questions == 0 and result.summary["overall"]["ex"] is None
    assert "## Overall" in (tmp_path / "empty" / "report.md").read_text()


def test_answers_that_finish_together_are_yielded_in_submission_order() -> None:
    # A crash (Ctrl-C) in a later question must not hide an earlier one that finished with it.
    from concurrent.futures import Future, ThreadPoolExecutor

    from route_graph.evaluation.runner import _windowed

    def finished(_pool: ThreadPoolExecutor, item: Any) -> Future:
        future: Future = Future()
        future.set_result(item)
        return future

    items = list(range(64))
    with ThreadPoolExecutor(max_workers=1) as pool:
        order = [item for item, _ in _windowed(pool, items, finished, window=64)]
    assert order == items


def test_set_overrides_route_config_fields_and_is_part_of_the_run(data: Path, tmp_path: Path) -> None:
    s = settings(data, config_overrides=("value_retrieval=true", "schema_format=compact", "link_sample_rows=2"))
    cfg = s.route_config()
    assert cfg.schema_format == "compact" and cfg.link_sample_rows == 2
    assert s.extras() == (ValueRetrieval(),)  # an extra's former field builds the extra in
    out = tmp_path / "set"
    run_eval(replace_limit(s, 2), out, llm=model(), progress=False, plots=False)
    saved = json.loads((out / "run.json").read_text())["settings"]
    assert saved["config_overrides"] == ["value_retrieval=true", "schema_format=compact", "link_sample_rows=2"]
    assert saved["route_config"]["schema_format"] == "compact"
    # The extras' settings are recorded under their former fields, as runs before extras did.
    assert saved["route_config"]["value_retrieval"] is True and saved["route_config"]["self_consistency"] == 0
    with pytest.raises(ConfigError, match="different settings"):  # another --set is another run
        run_eval(replace_limit(settings(data), 2), out, llm=model(), progress=False, plots=False)
    with pytest.raises(ConfigError, match="known fields"):
        settings(data, config_overrides=("no_such_field=1",))
    with pytest.raises(ConfigError, match="takes a bool"):
        settings(data, config_overrides=("value_retrieval=maybe",))
    with pytest.raises(ConfigError, match="takes a int"):
        settings(data, config_overrides=("link_sample_rows=many",))


def replace_limit(s: EvalSettings, limit: int) -> EvalSettings:
    from dataclasses import replace

    return replace(s, limit=limit)
