"""NC records from a model's own sampled answers, labelled by execution against the gold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import finetune
from finetune.config import SynthConfig
from finetune.data.sampling import SampleReport, sample_nc_records
from route_graph import RouteConfig, prompts
from route_graph.evaluation.datasets import Example
from route_graph.sql.opening import open_database
from route_graph.views import parsing
from tests.fakes import make_concert_db

PAIRS = {
    "How many singers are from France?": ("SELECT count(*) FROM singer WHERE country = 'France'", "```sql\nSELECT COUNT(*) FROM singer WHERE country='France';\n```"),
    "Who is the oldest singer?": ("SELECT name FROM singer ORDER BY age DESC LIMIT 1", "```sql\nSELECT name FROM singer ORDER BY age LIMIT 1\n```"),
    "Which singers are there?": ("SELECT name FROM singer", "I cannot answer that."),
    "List the stadiums.": ("SELECT name FROM stadium", "```sql\nSELECT nme FROM stadium\n```"),
}


class AnswersByQuestion(BaseChatModel):
    """Answers each TS prompt with the scripted text for its question."""

    @property
    def _llm_type(self) -> str:
        return "by-question-fake"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        text = str(messages[-1].content)
        question = text.split("Question: ", 1)[1].split("\n", 1)[0]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=PAIRS[question][1]))])


def test_model_answers_become_labelled_nc_records(tmp_path: Path) -> None:
    db = open_database(make_concert_db(tmp_path / "concert.sqlite"))
    examples = [Example(id=i, db_id="concert", question=q, gold_sql=g) for i, (q, (g, _)) in enumerate(PAIRS.items())]
    report = SampleReport()
    records = list(sample_nc_records(examples, lambda _: db, AnswersByQuestion(), RouteConfig(), SynthConfig(sample_batch_size=3), report))
    assert dict(report.counts) == {"correct": 1, "incorrect": 2, "no_sql": 1}
    by_id = {r.example_id: r for r in records}
    assert by_id[0].variant == "model:correct" and by_id[0].answer == prompts.NC_CORRECT
    assert "SELECT COUNT(*) FROM singer WHERE country='France'" in by_id[0].prompt[-1]["content"]
    assert by_id[1].variant == "model:incorrect"  # ORDER BY matters: the youngest is not the oldest
    assert parsing.parse_verdict(by_id[1].answer).sql == "SELECT name FROM singer ORDER BY age DESC LIMIT 1"
    assert "Execution error:" in by_id[3].prompt[-1]["content"]  # a failing answer shows its error
    assert 2 not in by_id


def test_package_exports_load_lazily() -> None:
    assert callable(finetune.train) and callable(finetune.merge_adapter) and callable(finetune.build_tiny_model)
    assert set(finetune.TASKS) == {"ts", "sl", "nc", "cw"}
