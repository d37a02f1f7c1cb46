"""Mining: NC records from a (fake) model's own SQL, labelled by execution; resumable; the CLI; mixing."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any, ClassVar

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

from finetune.cli import main
from finetune.config import SynthConfig, load_config
from finetune.data.mining import Miner, mine_to_file, mined_paths
from finetune.data.records import Record, read_jsonl
from finetune.data.synthesis import Synthesizer, SynthReport, gold_sql_of
from finetune.pipeline import training_records
from finetune.training.mixing import mix_records
from route_graph import RouteConfig, build_route_graph, prompts
from route_graph.errors import ConfigError, DataError
from route_graph.evaluation.datasets import Example
from route_graph.sql.opening import open_database
from route_graph.views import NO_SQL_ERROR, parsing
from tests.fakes import ScriptedChatModel, make_concert_db

#: question -> (gold SQL, the fake model's answer, the variant mined from it or a skip reason)
PAIRS: dict[str, tuple[str, str, str]] = {
    "How many singers are from France?": (
        "SELECT count(*) FROM singer WHERE country = 'France'", "SELECT COUNT(*) FROM singer WHERE country='France'", "model_correct"),
    "Who is the oldest singer?": (
        "SELECT name FROM singer ORDER BY age DESC LIMIT 1", "SELECT name FROM singer ORDER BY age LIMIT 1", "model_incorrect"),
    "List the stadiums.": ("SELECT name FROM stadium", "SELECT nme FROM stadium", "model_repair"),
    "Which singers are from the UK?": (
        "SELECT name FROM singer WHERE country = 'UK'", "SELECT name FROM singer WHERE country = 'United Kingdom'", "model_repair"),
    "How many concerts are there?": ("SELECT count(*) FROM concert", "DROP TABLE concert", "model_repair"),
    "Which singers are there?": ("SELECT name FROM singer", "I cannot answer that.", "model_repair"),
    "Which singers are from Spain?": (
        "SELECT name FROM singer WHERE country = 'Spain'", "SELECT name FROM singer WHERE country = 'España'", "gold_empty"),
}
QUESTIONS = list(PAIRS)


def question_of(messages: list[BaseMessage]) -> str:
    user = next(m for m in reversed(messages) if m.type == "human")
    return str(user.content).split("Question: ", 1)[1].split("\n", 1)[0]


class ByQuestion(BaseChatModel):
    """Answers each generate prompt with the scripted SQL of its question (a fenced block unless it
    is prose); counts its calls and keeps the messages it saw."""

    _seen: list[list[BaseMessage]] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "by-question-fake"

    @property
    def seen(self) -> list[list[BaseMessage]]:
        return list(self._seen)

    def answer(self, sql: str) -> str:
        return sql if sql.startswith("I ") else f"```sql\n{sql}\n```"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self._seen.append(list(messages))
        text = self.answer(PAIRS[question_of(messages)][1])
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


class ContinuingByQuestion(ByQuestion):
    """An in-process engine's way: it continues the prefilled "```sql\\n" of the last assistant turn."""

    continues_final_message: ClassVar[bool] = True

    def answer(self, sql: str) -> str:
        return sql if sql.startswith("I ") else f"{sql}\n```"


def examples() -> list[Example]:
    return [Example(id=i, db_id="concert", question=q, gold_sql=PAIRS[q][0]) for i, q in enumerate(QUESTIONS)]


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    return make_concert_db(tmp_path / "concert.sqlite")


def mine(db_path: Path, llm: BaseChatModel, output: Path, items: list[Example] | None = None, *, model: str = "fake",
         batch_size: int = 1, cfg: SynthConfig | None = None):
    db = open_database(db_path)
    miner = Miner(llm, RouteConfig(), cfg or SynthConfig(), seed=0, batch_size=batch_size)
    return mine_to_file(miner, items if items is not None else examples(), lambda _: db, output, identity={"model": model})


# ------------------------------------------------------------------------------------ labelling
@pytest.mark.parametrize("fake", [ByQuestion, ContinuingByQuestion])
def test_each_kind_of_answer_gets_its_variant_and_target(db_path: Path, tmp_path: Path, fake: type[ByQuestion]) -> None:
    llm = fake()
    report = mine(db_path, llm, tmp_path / "mined.jsonl", batch_size=3)
    records = {r.example_id: r for r in read_jsonl(tmp_path / "mined.jsonl")}
    outcomes = [json.loads(line) for line in mined_paths(tmp_path / "mined.jsonl")[0].read_text().splitlines()]
    assert [o["outcome"] if o["outcome"] != "skipped" else o["reason"].split(":")[0] for o in outcomes] == [PAIRS[q][2] for q in QUESTIONS]
    assert dict(report.outcomes) == {"model_correct": 1, "model_incorrect": 1, "model_repair": 4, "skipped": 1}
    assert dict(report.problems) == {"error": 3, "empty": 2}  # empty: UK and Spain
    assert len(llm.seen) == len(PAIRS) and all(r.task == "nc" for r in records.values())
    assert set(records) == {0, 1, 2, 3, 4, 5}  # Spain: the gold is empty too, nothing to teach

    correct, incorrect = records[0], records[1]
    assert correct.variant == "model_correct" and correct.answer == prompts.nc_completion(True)
    assert "SELECT COUNT(*) FROM singer WHERE country='France'" in correct.prompt[-1]["content"]
    assert incorrect.variant == "model_incorrect"
    assert incorrect.answer == prompts.nc_completion(False, "SELECT name FROM singer ORDER BY age DESC LIMIT 1")
    assert parsing.parse_verdict(incorrect.answer).sql == PAIRS[QUESTIONS[1]][0]
    for i in (2, 3, 4, 5):
        assert records[i].variant == "model_repair" and records[i].answer == prompts.nc_repair_completion(PAIRS[QUESTIONS[i]][0])
        assert PAIRS[QUESTIONS[i]][0] in records[i].answer
    assert "A previous attempt failed: Execution error: no such column: nme" in records[2].prompt[-1]["content"]
    assert "returned no useful rows" in records[3].prompt[-1]["content"] and "United Kingdom" in records[3].prompt[-1]["content"]
    # Prose: no SQL at all; after a prefilled "```sql\n" (as the graph sends it) it is SQL that fails to parse.
    assert (NO_SQL_ERROR if fake is ByQuestion else "Cannot parse the SQL") in records[5].prompt[-1]["content"]
    if fake is ContinuingByQuestion:  # the graph's prefill: the answer continues "```sql\n"
        assert all(m[-1].type == "ai" and m[-1].content == "```sql\n" for m in llm.seen)
    else:
        assert all(m[-1].type == "human" for m in llm.seen)


def test_the_model_is_asked_the_synthesized_linked_prompt(db_path: Path, tmp_path: Path) -> None:
    """The generate prompt is the TS linked_schema record's, extra table included (same seed and settings)."""
    cfg = SynthConfig(tasks=["ts"], ts_full_schema=False, extra_table_prob=0.5, sl_all_columns=True)
    llm = ByQuestion()
    mine(db_path, llm, tmp_path / "mined.jsonl", cfg=cfg)
    db = open_database(db_path)
    ts = {r.example_id: r for r in Synthesizer(RouteConfig(), cfg, seed=0).run(examples(), lambda _: db, SynthReport())}
    asked = {question_of(m): [{"role": {"system": "system", "human": "user"}[x.type], "content": x.content} for x in m] for m in llm.seen}
    assert [asked[e.question] for e in examples()] == [ts[e.id].prompt for e in examples()]


@pytest.mark.parametrize("index", [2, 3])  # a failing SQL, an empty result
def test_repair_prompts_are_what_the_graph_sends(db_path: Path, tmp_path: Path, index: int) -> None:
    question = QUESTIONS[index]
    gold, bad, _ = PAIRS[question]
    mine(db_path, ByQuestion(), tmp_path / "mined.jsonl", [examples()[index]])
    record = next(read_jsonl(tmp_path / "mined.jsonl"))
    db = open_database(db_path)
    scripted = ScriptedChatModel(scripts={
        "sl": [prompts.sl_completion({"singer": ["name"], "stadium": ["name"]})],
        "ts": [f"```sql\n{bad}\n```", f"```sql\n{bad}\n```"], "nc_repair": [f"```sql\n{gold}\n```"], "cw": [f"```sql\n{gold}\n```"],
    })
    build_route_graph(scripted, db, RouteConfig()).invoke({"question": question})
    sent = [text for task, text in scripted.calls if task == "nc_repair"]
    assert sent == [record.prompt[-1]["content"]]


def test_model_sql_cannot_modify_the_database(db_path: Path, tmp_path: Path) -> None:
    before = hashlib.sha256(db_path.read_bytes()).hexdigest(), db_path.stat().st_mtime_ns
    drop = [e for e in examples() if PAIRS[e.question][1].startswith("DROP")]
    mine(db_path, ByQuestion(), tmp_path / "mined.jsonl", drop)
    record = next(read_jsonl(tmp_path / "mined.jsonl"))
    assert record.variant == "model_repair" and "A previous attempt failed" in record.prompt[-1]["content"]
    assert (hashlib.sha256(db_path.read_bytes()).hexdigest(), db_path.stat().st_mtime_ns) == before
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM concert").fetchone() == (2,)


# ------------------------------------------------------------------------------------- resuming
def test_a_second_run_does_not_ask_the_model_again(db_path: Path, tmp_path: Path) -> None:
    output = tmp_path / "mined.jsonl"
    first = ByQuestion()
    mine(db_path, first, output, examples()[:3])
    assert len(first.seen) == 3
    second = ByQuestion()
    report = mine(db_path, second, output)
    assert len(second.seen) == len(PAIRS) - 3 and report.already_done == 3 and report.examples == len(PAIRS) - 3
    third = ByQuestion()
    assert mine(db_path, third, output).examples == 0 and third.seen == []
    ids = [r.example_id for r in read_jsonl(output)]
    assert ids == sorted(set(ids)) == [0, 1, 2, 3, 4, 5]  # each example once, in order
    report_file = json.loads(mined_paths(output)[1].read_text())
    assert report_file["identity"] == {"model": "fake"} and report_file["already_done"] == len(PAIRS)


def test_a_torn_line_is_redone_and_another_model_is_refused(db_path: Path, tmp_path: Path) -> None:
    output = tmp_path / "mined.jsonl"
    mine(db_path, ByQuestion(), output, examples()[-1:])  # Spain: skipped, so only in the outcomes file
    outcomes = mined_paths(output)[0]
    outcomes.write_text(outcomes.read_text()[:-20])  # a crash mid-line
    again = ByQuestion()
    mine(db_path, again, output, examples()[-1:])
    assert len(again.seen) == 1 and len(outcomes.read_text().splitlines()) == 1
    with pytest.raises(ConfigError, match="other settings"):
        mine(db_path, ByQuestion(), output, model="another")
    (tmp_path / "orphan.jsonl").write_text("")
    with pytest.raises(ConfigError, match="without"):
        mine(db_path, ByQuestion(), tmp_path / "orphan.jsonl")


# ------------------------------------------------------------------------------------ CLI + mixing
@pytest.fixture()
def spider_dir(tmp_path: Path) -> Path:
    root = tmp_path / "spider"
    make_concert_db((root / "database" / "concert").mkdir(parents=True) or root / "database" / "concert" / "concert.sqlite")
    pairs = [{"question": q, "query": gold, "db_id": "concert"} for q, (gold, _, _) in PAIRS.items()]
    (root / "train.json").write_text(json.dumps(pairs))
    return root


def test_cli_mine_end_to_end_and_resume(spider_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    llm = ByQuestion()
    specs: list[str] = []
    monkeypatch.setattr("route_graph.models.load_chat_model", lambda spec=None, **kw: specs.append(spec) or llm)
    out = tmp_path / "run"
    args = ["mine", "--set", f"data={json.dumps(str(spider_dir / 'train.json'))}", "--output-dir", str(out), "--model", "fake-spec"]
    assert main([*args, "--limit", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["examples"] == 4 and specs == ["fake-spec"] and len(llm.seen) == 4
    assert (out / "filter" / "filter_report.json").is_file()  # the filter step ran for it
    assert main([*args, "--skip", "2", "--limit", "3"]) == 0  # overlaps the first slice by two
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["already_done"] == 2 and summary["examples"] == 1 and len(llm.seen) == 5
    assert "mine: mined 1 examples" in captured.err and "s/example" in captured.err
    report = json.loads((out / "data" / "mine_report.json").read_text())
    assert report["identity"]["model"] == "fake-spec" and report["seconds_per_example"] is not None
    mined = list(read_jsonl(out / "data" / "mined.jsonl"))
    assert len({r.example_id for r in mined}) == len(mined) and {r.variant for r in mined} <= {"model_correct", "model_incorrect", "model_repair"}
    assert main([*args, "--skip", "-1"]) == 2 and "--skip" in capsys.readouterr().err


def test_task_variant_ratios_and_extra_records_reach_mixing(tmp_path: Path, db_path: Path) -> None:
    mined_file = tmp_path / "mined.jsonl"
    mine(db_path, ByQuestion(), mined_file)
    synthesized = tmp_path / "records.jsonl"
    synth = [Record.of(t, "concert", i, v, [{"role": "user", "content": f"{t}{i}"}], "x")
             for i in range(6) for t, v in (("ts", "linked_schema"), ("nc", "correct"))]
    synthesized.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in synth))
    ratios = {"ts": 1, "nc/model_incorrect": 1, "nc/model_repair": 1}
    cfg = load_config(None, [f"train.extra_records={json.dumps([str(mined_file)])}", f"train.task_ratios={json.dumps(ratios)}"])
    assert cfg.train.task_ratios == {k: float(v) for k, v in ratios.items()}
    paths = training_records(cfg, [synthesized])
    assert paths == [synthesized, mined_file]
    records = [r for p in paths for r in read_jsonl(p)]
    chosen, report = mix_records(records, cfg.train.task_ratios, 6, lambda r: r, seed=0)
    assert report.quota == {"nc/model_incorrect": 2, "nc/model_repair": 2, "ts": 2}
    assert {f"{r.task}/{r.variant}" for r, _ in chosen} == {"ts/linked_schema", "nc/model_incorrect", "nc/model_repair"}
    # Without variant keys the mix is by task, as before: mined and synthesized NC share one pool.
    _, by_task = mix_records(records, {"ts": 1, "nc": 1}, None, lambda r: r, seed=0)
    assert by_task.available == {"nc": 6 + 6, "ts": 6}
    with pytest.raises(ConfigError, match="task_ratios"):
        load_config(None, ['train.task_ratios={"zz/model_incorrect": 1}'])
    with pytest.raises(DataError, match="route-finetune mine"):
        training_records(load_config(None, [f"train.extra_records={json.dumps([str(tmp_path / 'none.jsonl')])}"]), [synthesized])


def test_gold_sql_of_is_the_mined_target(db_path: Path, tmp_path: Path) -> None:
    """Targets are the synthesis targets: whitespace normalised, T1/T2 aliases qualified where safe."""
    aliased = Example(id=0, db_id="concert", question=QUESTIONS[1], gold_sql="SELECT T1.name  FROM singer AS T1 ORDER BY T1.age DESC LIMIT 1;")
    mine(db_path, ByQuestion(), tmp_path / "mined.jsonl", [aliased])
    record = next(read_jsonl(tmp_path / "mined.jsonl"))
    target = parsing.parse_verdict(record.answer).sql
    assert target != gold_sql_of(aliased, SynthConfig()) and "T1" not in target and "singer.name" in target
