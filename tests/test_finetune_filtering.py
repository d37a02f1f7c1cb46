"""Noisy-pair filtering: planted broken gold SQL is caught (with the reason), a model judge can
drop more, and on the shared Spider training set exactly the three known broken queries go."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from finetune.config import FilterConfig
from finetune.data.filtering import (
    check_gold,
    filter_examples,
    judge_pairs,
    write_filtered_split,
)
from route_graph import RouteConfig, prompts
from route_graph.errors import DatabaseError
from route_graph.evaluation.datasets import Example, load_dataset
from route_graph.sql.opening import open_database
from tests.fakes import make_concert_db

INFINITE = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
PLANTED = [
    ("How many singers?", "SELECT count(*) FROM singer", None),
    ("Syntax error", "SELEC name FROM singer", "gold_error"),
    ("Missing table", "SELECT name FROM performers", "gold_error"),
    ("Missing column", "SELECT nationality FROM singer", "gold_error"),
    ("Never ends", INFINITE, "gold_timeout"),
    ("Writes", "DELETE FROM singer", "gold_error"),
    ("French singers", "SELECT name FROM singer WHERE country = 'France'", None),
    ("Nobody", "SELECT name FROM singer WHERE age > 100", None),
]


@pytest.fixture()
def db(tmp_path: Path):
    return open_database(make_concert_db(tmp_path / "concert.sqlite"))


def examples() -> list[Example]:
    return [Example(id=i, db_id="concert", question=q, gold_sql=sql) for i, (q, sql, _) in enumerate(PLANTED)]


def test_planted_broken_pairs_are_dropped_with_reasons(db) -> None:
    report = check_gold(examples(), lambda _: db, RouteConfig(), FilterConfig(timeout_s=0.5))
    assert [e.id for e in report.kept] == [0, 6, 7]
    reasons = {d.example_id: d.reason for d in report.dropped}
    assert reasons == {i: reason for i, (_, _, reason) in enumerate(PLANTED) if reason}
    details = {d.example_id: d.detail for d in report.dropped}
    assert "performers" in details[2] and "nationality" in details[3] and "0.5" in details[4]
    assert details[5].startswith("rejected:") and details[1].startswith(("rejected:", "error:"))
    summary = report.to_dict()
    assert summary["by_reason"] == {"gold_error": 4, "gold_timeout": 1}
    assert summary["kept_ids"] == [0, 6, 7]


def test_optional_drops_and_missing_database(db) -> None:
    def open_db(db_id: str):
        if db_id == "gone":
            raise DatabaseError("No database file at gone.sqlite")
        return db

    pairs = examples() + [Example(id=50, db_id="gone", question="?", gold_sql="SELECT 1")]
    report = check_gold(pairs, open_db, RouteConfig(), FilterConfig(timeout_s=0.5, drop_empty=True))
    reasons = {d.example_id: d.reason for d in report.dropped}
    assert reasons[7] == "empty_result" and reasons[50] == "missing_database"
    assert [e.id for e in report.kept] == [0, 6]


class JudgeModel(BaseChatModel):
    """Says "incorrect" for NC prompts whose candidate SQL contains ``bad``; records prompts."""

    bad: str
    seen: list[str]

    @property
    def _llm_type(self) -> str:
        return "judge-fake"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        text = str(messages[-1].content)
        self.seen.append(text)
        candidate = text.split("Candidate SQL:", 1)[1].split("Execution result:", 1)[0]
        if self.bad in candidate:
            answer = prompts.nc_completion(False, "SELECT name FROM singer WHERE age > 50")
        else:
            answer = prompts.NC_CORRECT
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=answer))])


def test_model_judge_drops_pairs_it_calls_incorrect(db) -> None:
    judge = JudgeModel(bad="country = 'France'", seen=[])
    report = filter_examples(examples(), lambda _: db, RouteConfig(), FilterConfig(timeout_s=0.5, judge_batch_size=2), judge=judge)
    assert [e.id for e in report.kept] == [0, 7]
    judged = [d for d in report.dropped if d.reason == "judge_incorrect"]
    assert [d.example_id for d in judged] == [6]
    assert "age > 50" in judged[0].detail
    # The judge saw the NC prompt with the pair's execution feedback, one per surviving pair.
    assert len(judge.seen) == 3 and all("Execution result:\nColumns:" in p for p in judge.seen)


def test_judge_pairs_alone(db) -> None:
    judge = JudgeModel(bad="nothing matches this", seen=[])
    assert judge_pairs(examples()[:1], lambda _: db, judge, RouteConfig()) == []


def test_filtered_split_keeps_the_original_format(tmp_path: Path) -> None:
    split = tmp_path / "train.json"
    split.write_text(json.dumps([{"question": q, "query": s, "db_id": "concert", "extra": i} for i, (q, s, _) in enumerate(PLANTED)]))
    out = write_filtered_split(split, [0, 6], tmp_path / "out" / "filtered.json")
    kept = json.loads(out.read_text())
    assert [k["extra"] for k in kept] == [0, 6] and kept[0]["query"] == PLANTED[0][1]


@pytest.mark.slow
def test_the_three_broken_spider_training_queries_are_caught(data_dir: Path) -> None:
    """Executes all 5,862 gold queries of the shared Spider training split (~10-40 s on 2 cores)."""
    dataset = load_dataset(None, data_dir / "spider_train" / "train.json")
    pool: dict[str, Any] = {}

    def open_db(db_id: str):
        if db_id not in pool:
            pool[db_id] = open_database(dataset.db_path(db_id))
        return pool[db_id]

    report = check_gold(dataset.examples, open_db, RouteConfig())
    dropped = {(d.example_id, d.db_id): d for d in report.dropped}
    assert set(dropped) == {(2590, "assets_maintenance"), (3714, "document_management"), (3715, "document_management")}
    assert "Ref_Company_Types" in dropped[(2590, "assets_maintenance")].detail
    assert "INTERSECT" in dropped[(3714, "document_management")].detail
    assert len(report.kept) == len(dataset.examples) - 3
