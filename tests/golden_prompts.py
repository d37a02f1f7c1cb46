"""Every message the model sees, rendered on fixture databases: the golden prompts.

Trained adapters and stored evaluations depend on every byte of every prompt, so a refactor must
not change one. Each scenario below runs the real graph (or a ``finetune`` data builder) with a
scripted chat model that records the exact messages of each call, prefilled answer turn included
(the model claims to continue a final assistant message, as the default llama.cpp engine does),
and returns them as JSON text. ``scripts/write_golden_prompts.py`` stores that text under
``tests/golden/``; ``tests/test_golden_prompts.py`` recomputes it and compares byte for byte.

Scenarios cover each stage and prompt variant: schema linking (links + full-schema draft),
generate on the linked and on the full schema, noise correction (verdict, repair of a failing
and of an empty SQL), continuation writing (full and reduced schema), rescue, the follow-up
rewrite, the one-sentence answer, few-shot style, retrieved values, the compact format, a
schema cut to a token budget, DuckDB; and the training records of synthesis (TS, SL, NC, CW),
model sampling and the filtering judge. Spider scenarios need the shared data (``ROUTE_GRAPH_DATA``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

from tests.conftest import SHOP_SQL, make_sqlite
from tests.fakes import make_concert_db, shared_data_dir

__all__ = ["GOLDEN_DIR", "SCENARIOS", "Scenario", "render_scenario"]

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"

#: Calls made at the same time, in the order a file lists them (the rest keep their order), so a
#: file does not depend on which thread asked first.
CONCURRENT_ORDER = ("schema_link.links", "schema_link.draft")
_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def _message(m: BaseMessage | dict[str, str]) -> dict[str, str]:
    if isinstance(m, dict):
        return {"role": m["role"], "content": m["content"]}
    return {"role": _ROLES.get(m.type, m.type), "content": str(m.content)}


def _task(messages: list[BaseMessage]) -> str:
    """Which prompt this is, read from its last user turn (the last turn may be a prefill)."""
    text = next(str(m.content) for m in reversed(messages) if m.type == "human")
    for marker, task in (
        ("Which tables and columns are needed", "sl"),
        ("Candidate SQL:", "nc"),
        ("A previous attempt ", "nc_repair"),
        ("Complete the following unfinished SQL", "cw"),
        ("Rewrite the follow-up question", "rewrite"),
        ("Answer the question in one short sentence", "answer"),
    ):
        if marker in text:
            return task
    return "ts"


class RecordingChatModel(BaseChatModel):
    """Answers each task from its script, in order (the last answer repeats); records the prompts
    of ``batch`` calls in input order. Claims to continue a prefilled answer, like the engines."""

    continues_final_message: ClassVar[bool] = True  # model_capabilities: prefill="engine"
    scripts: dict[str, list[str]]
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _batches: list[list[dict[str, str]]] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "golden-recording-fake"

    def batch(self, inputs: list[Any], *args: Any, **kwargs: Any) -> list[Any]:  # type: ignore[override]
        for messages in inputs:
            self._batches.append([_message(m) for m in messages])
        return super().batch(inputs, *args, **kwargs)

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
        task = _task(messages)
        with self._lock:
            script = self.scripts.get(task)
            if not script:
                raise AssertionError(f"unscripted {task} call:\n{messages[-1].content}")
            answer = script.pop(0) if len(script) > 1 else script[0]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=answer))])


class CallRecorder(BaseCallbackHandler):
    """Each chat-model call's run name and messages, as LangChain hands them to the model."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[dict[str, str]]]] = []
        self._lock = threading.Lock()

    def on_chat_model_start(self, serialized: Any, messages: list[list[BaseMessage]], **kwargs: Any) -> None:
        with self._lock:
            for batch in messages:
                self.calls.append((str(kwargs.get("name")), [_message(m) for m in batch]))

    def ordered(self) -> list[dict[str, Any]]:
        """Calls by stage (in the order stages first called), concurrent ones in ``CONCURRENT_ORDER``."""
        first: dict[str, int] = {}
        for i, (name, _) in enumerate(self.calls):
            first.setdefault(name.split(".")[0], i)
        rank = {name: i for i, name in enumerate(CONCURRENT_ORDER)}

        def key(call: tuple[int, tuple[str, Any]]) -> tuple[int, int, int]:
            index, (name, _) = call
            return first[name.split(".")[0]], rank.get(name, 0), index

        return [{"call": name, "messages": messages} for _, (name, messages) in sorted(enumerate(self.calls), key=key)]


# ----------------------------------------------------------------------------------- databases
def _concert(tmp: Path) -> Any:
    from route_graph.sql.opening import open_database

    return open_database(make_concert_db(tmp / "concert.sqlite"))


def _shop(tmp: Path) -> Any:
    from route_graph.sql.opening import open_database

    return open_database(make_sqlite(tmp / "shop.sqlite", SHOP_SQL))


def _concert_duckdb(tmp: Path) -> Any:
    import duckdb

    from route_graph.sql.opening import open_database

    path = tmp / "concert.duckdb"
    conn = duckdb.connect(str(path))
    conn.execute("CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name VARCHAR, country VARCHAR, age INTEGER)")
    conn.execute("CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, concert_name VARCHAR, year INTEGER)")
    conn.execute(
        "CREATE TABLE singer_in_concert (concert_id INTEGER REFERENCES concert(concert_id), "
        "singer_id INTEGER REFERENCES singer(singer_id))"
    )
    conn.execute("INSERT INTO singer VALUES (1, 'Edith', 'France', 47), (2, 'Adele', 'UK', 35)")
    conn.execute("INSERT INTO concert VALUES (1, 'Spring', 2014), (2, 'Summer', 2015)")
    conn.execute("INSERT INTO singer_in_concert VALUES (1, 1), (2, 2)")
    conn.close()
    return open_database(path)


def _spider(db_id: str) -> Callable[[Path], Any]:
    def open_spider(tmp: Path) -> Any:
        from route_graph.sql.opening import open_database

        data = shared_data_dir()
        assert data is not None, "the Spider scenarios need the shared data (ROUTE_GRAPH_DATA)"
        return open_database(data / "spider_train" / "database" / db_id / f"{db_id}.sqlite")

    return open_spider


def _spider_questions(db_id: str, limit: int) -> list[tuple[str, str, str | None]]:
    data = shared_data_dir()
    assert data is not None
    records = json.loads((data / "spider_train" / "valid.json").read_text(encoding="utf-8"))
    return [(r["question"], r["query"], None) for r in records if r["db_id"] == db_id][:limit]


# ----------------------------------------------------------------------------------- scenarios
def fence(sql: str) -> str:
    return f"```sql\n{sql}\n```"


SINGERS_2014 = (
    "SELECT DISTINCT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
    "JOIN concert AS T3 ON T2.concert_id = T3.concert_id WHERE T3.year = 2014"
)
SINGERS_2014_LINKS = '{"singer": ["name", "singer_id"], "singer_in_concert": ["singer_id", "concert_id"], "concert": ["concert_id", "year"]}'
CONCERT_PAIRS: list[tuple[str, str, str | None]] = [
    ("How many singers are from France?", "SELECT count(*) FROM singer WHERE country  =  'France'", None),
    (
        "Which concerts were held in Wembley?",
        "SELECT T1.concert_name FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id WHERE T2.name = 'Wembley'",
        None,
    ),
    ("Which singers performed in 2014?", SINGERS_2014, None),
    ("How many French singers are there?", "select count(*) from singer where country = 'France';", "French means country = 'France'"),
    ("Who is the youngest singer?", "SELECT name FROM singer ORDER BY age LIMIT 1", None),
]


@dataclass(frozen=True)
class Scenario:
    """One golden file: ``build(tmp)`` returns its JSON-ready content; ``spider``: needs the data."""

    name: str
    build: Callable[[Path], dict[str, Any]]
    spider: bool = False


def _graph_run(
    open_db: Callable[[Path], Any],
    questions: list[Any],
    scripts: dict[str, list[str]],
    config: dict[str, Any] | None = None,
    *,
    thread: bool = False,
) -> Callable[[Path], dict[str, Any]]:
    """Run the graph once per input (in one thread when ``thread``) and record every call."""

    def build(tmp: Path) -> dict[str, Any]:
        from langgraph.checkpoint.memory import InMemorySaver

        from route_graph import RouteConfig, build_route_graph
        from route_graph.graph.extras import split_fields

        llm = RecordingChatModel(scripts={k: list(v) for k, v in scripts.items()})
        # The files name the extras by their former RouteConfig fields ("self_consistency": 2).
        fields, extras = split_fields(config or {})
        graph = build_route_graph(
            llm, open_db(tmp), RouteConfig(**fields), extras=extras, checkpointer=InMemorySaver() if thread else None
        )
        runs = []
        for i, question in enumerate(questions):
            recorder = CallRecorder()
            run_config: dict[str, Any] = {"callbacks": [recorder]}
            if thread:
                run_config["configurable"] = {"thread_id": "golden"}
            payload = {"question": question} if isinstance(question, str) else question
            out = graph.invoke(payload, run_config)
            runs.append({"input": _jsonable(payload), "final_sql": out.get("sql"), "calls": recorder.ordered()})
        return {"config": config or {}, "runs": runs}

    return build


def _jsonable(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: ([_message(m) for m in v] if k == "messages" else v) for k, v in payload.items()}


def _synthesis(
    open_db: Callable[[Path], Any],
    pairs: Callable[[], list[tuple[str, str, str | None]]],
    route: dict[str, Any] | None = None,
    synth: dict[str, Any] | None = None,
) -> Callable[[Path], dict[str, Any]]:
    """The training records ``finetune.data.synthesis`` makes for ``pairs``."""

    def build(tmp: Path) -> dict[str, Any]:
        from finetune.config import SynthConfig
        from finetune.data.synthesis import Synthesizer
        from route_graph.views import ViewConfig

        db = open_db(tmp)
        synthesizer = Synthesizer(ViewConfig(**(route or {})), SynthConfig(**(synth or {})), seed=0)
        records = list(synthesizer.run(_examples(db, pairs()), lambda _db_id: db))
        return {"route": route or {}, "synth": synth or {}, "records": [_record(r) for r in records]}

    return build


def _examples(db: Any, pairs: list[tuple[str, str, str | None]]) -> list[Any]:
    from route_graph.evaluation.datasets import Example

    return [Example(id=i, db_id="db", question=q, gold_sql=sql, hint=hint) for i, (q, sql, hint) in enumerate(pairs)]


def _record(record: Any) -> dict[str, Any]:
    return {
        "task": record.task,
        "variant": record.variant,
        "example_id": record.example_id,
        "prompt": [_message(m) for m in record.prompt],
        "completion": [_message(m) for m in record.completion],
    }


def _sampling(tmp: Path) -> dict[str, Any]:
    """``finetune.data.sampling``: the TS prompts sent for sampling and the NC records made of the answers."""
    from finetune.config import SynthConfig
    from finetune.data.sampling import sample_nc_records
    from route_graph import RouteConfig

    db = _concert(tmp)
    pairs = CONCERT_PAIRS[:3]
    answers = [fence(pairs[0][1]), fence("SELECT count(*) FROM singer"), fence(SINGERS_2014.replace("2014", "2015"))]
    llm = RecordingChatModel(scripts={"ts": answers})
    records = list(sample_nc_records(_examples(db, pairs), lambda _db_id: db, llm, RouteConfig(), SynthConfig(sample_batch_size=1)))
    return {"sent": llm._batches, "records": [_record(r) for r in records]}


def _judging(tmp: Path) -> dict[str, Any]:
    """``finetune.data.filtering.judge_pairs``: the NC prompts about each gold SQL."""
    from finetune.data.filtering import judge_pairs
    from route_graph import RouteConfig

    db = _concert(tmp)
    llm = RecordingChatModel(scripts={"nc": ["The SQL is correct."]})
    judge_pairs(_examples(db, CONCERT_PAIRS[:3]), lambda _db_id: db, llm, RouteConfig(), batch_size=1)
    return {"sent": llm._batches}


SCENARIOS: tuple[Scenario, ...] = (
    # Everything fails: SL, draft, generate, NC repair (error), CW (full schema), then rescue samples.
    Scenario(
        "graph_concert_rescue",
        _graph_run(
            _concert,
            ["Which singers performed in 2014?"],
            {
                "sl": [SINGERS_2014_LINKS],
                "ts": [fence("SELECT title FROM performances WHERE year = 2014")],
                "nc_repair": [
                    fence("SELECT performer FROM shows WHERE year = 2014"),
                    fence("SELECT performer FROM shows WHERE year = 2014"),
                    fence(SINGERS_2014),
                ],
                "cw": [fence("SELECT artist FROM gigs")],
            },
        ),
    ),
    # Hard SQL that runs: NC verdict (nc_verdict on) with a taken correction, self-consistency
    # samples, CW on the full schema, and the one-sentence answer.
    Scenario(
        "graph_concert_verdict",
        _graph_run(
            _concert,
            ["Which singers performed in 2014?"],
            {
                "sl": [SINGERS_2014_LINKS],
                "ts": [fence(SINGERS_2014.replace("2014", "2015"))],
                "nc": [f"The SQL is incorrect. The correct SQL is:\n{fence(SINGERS_2014)}"],
                "cw": [fence(SINGERS_2014)],
                "answer": ["Edith and Jacques performed in 2014."],
            },
            {"nc_verdict": True, "answer_in_words": True, "self_consistency": 2},
        ),
    ),
    # SQL that returns no rows: NC repair of an empty result (the SQL is shown).
    Scenario(
        "graph_concert_empty_repair",
        _graph_run(
            _concert,
            [{"question": "How many French singers are there?", "hint": "French means country = 'France'"}],
            {
                "sl": ['{"singer": ["country"]}'],
                "ts": [fence("SELECT count(*) FROM singer WHERE country = 'French'"), fence("SELECT name FROM singer WHERE country = 'French'")],
                "nc_repair": [fence("SELECT count(*) FROM singer WHERE country = 'France'")],
            },
        ),
    ),
    # Generation alone on the full schema, then a chat follow-up rewritten with the history.
    Scenario(
        "graph_concert_follow_up",
        _graph_run(
            _concert,
            ["How many singers are from the UK?", {"messages": [{"role": "user", "content": "and in France?"}]}],
            {
                "ts": [fence("SELECT count(*) FROM singer WHERE country = 'UK'"), fence("SELECT count(*) FROM singer WHERE country = 'France'")],
                "rewrite": ["How many singers are from France?"],
            },
            {"schema_linking": False, "noise_correction": False, "continuation_writing": False, "rescue": False},
            thread=True,
        ),
    ),
    # Few-shot prompts with retrieved values: every task's worked examples.
    Scenario(
        "graph_concert_few_shot_values",
        _graph_run(
            _concert,
            ["Which singers from France are older than 50?", "Which singers are from the UK?"],
            {
                "sl": ['{"singer": ["name", "country", "age"]}', '{"singer": ["name", "country"]}'],
                "ts": [
                    fence("SELECT name FROM singer WHERE country = 'France' AND age > 70"),
                    fence("SELECT name FROM singer WHERE country = 'France' AND age > 70"),
                    fence("SELECT name FROM singer WHERE country = 'UK'"),
                ],
                "nc_repair": [fence("SELECT name FROM singer WHERE country = 'France' AND age > 50")],
                "nc": ["The SQL is correct."],
                "cw": [fence("SELECT name FROM singer WHERE country = 'France' AND age > 50"), fence("SELECT name FROM singer WHERE country = 'UK'")],
            },
            {"prompt_style": "few_shot", "value_retrieval": True, "nc_verdict": True, "difficulty_threshold": 0},
        ),
    ),
    # Compact schema format, recall-first linking, CW on the reduced schema.
    Scenario(
        "graph_shop_compact_recall",
        _graph_run(
            _shop,
            ["What did Ada order, and how many of each?"],
            {
                "sl": ['{"customers": ["name"], "Products": ["Name"], "order_items": ["qty"]}'],
                "ts": [
                    fence(
                        "SELECT p.Name, i.qty FROM customers c JOIN orders o ON o.customer_id = c.id "
                        "JOIN order_items i ON i.order_id = o.order_id JOIN Products p ON p.ProductID = i.product_id "
                        "WHERE c.name = 'Ada'"
                    )
                ],
                "cw": [fence("SELECT Name FROM Products")],
            },
            {"schema_format": "compact", "recall_first_linking": True, "cw_full_schema": False},
        ),
    ),
    # The shop's odd names (spaces, keywords, mixed case, long values, blank types) in DDL.
    Scenario(
        "graph_shop_ddl",
        _graph_run(
            _shop,
            ["Which products did Ada order?"],
            {
                "sl": ['{"customers": ["name"], "orders": ["order", "note"], "Products": ["Name"]}'],
                "ts": [fence('SELECT "order", note FROM orders')],
            },
        ),
    ),
    # A token budget: sample values, then unneeded columns and tables give way.
    Scenario(
        "graph_shop_budget",
        _graph_run(
            _shop,
            ["When did each customer join?"],
            {"sl": ['{"customers": ["name", "Join Date"]}'], "ts": [fence('SELECT name, "Join Date" FROM customers')]},
            {"schema_token_budget": 180},
        ),
    ),
    Scenario(
        "graph_duckdb",
        _graph_run(
            _concert_duckdb,
            ["Which singers performed in 2014?"],
            {
                "sl": ['{"singer": ["name"], "concert": ["year"]}'],
                "ts": [fence(SINGERS_2014.replace("T1.name", "T1.nam"))],
                "nc_repair": [fence(SINGERS_2014)],
                "cw": [fence(SINGERS_2014)],
            },
        ),
    ),
    Scenario(
        "graph_spider_customers_card_transactions",
        _graph_run(
            _spider("customers_card_transactions"),
            ["How many accounts do we have?"],
            {"sl": ['{"Accounts": ["account_id"]}'], "ts": [fence("SELECT count(*) FROM Accounts")]},
        ),
        spider=True,
    ),
    Scenario(
        "graph_spider_soccer_2_budget",
        _graph_run(
            _spider("soccer_2"),
            ["What is the average enrollment of colleges in LA?"],
            {
                "sl": ['{"College": ["enr", "state"]}'],
                "ts": [fence("SELECT avg(enr) FROM College WHERE state = 'LA'")],
            },
            {"schema_token_budget": 400},
        ),
        spider=True,
    ),
    Scenario("synthesis_concert", _synthesis(_concert, lambda: CONCERT_PAIRS)),
    Scenario(
        "synthesis_concert_few_shot_values",
        _synthesis(
            _concert,
            lambda: CONCERT_PAIRS,
            {"prompt_style": "few_shot", "value_retrieval": True, "cw_full_schema": False, "recall_first_linking": True},
            {"qualify_style": "table_names", "sl_join_keys": True, "extra_table_prob": 1.0},
        ),
    ),
    Scenario(
        "synthesis_spider",
        _synthesis(_spider("race_track"), lambda: _spider_questions("race_track", 4)),
        spider=True,
    ),
    Scenario("sampling_concert", _sampling),
    Scenario("judge_concert", _judging),
)


@contextlib.contextmanager
def _private_cache(tmp: Path) -> Iterator[None]:
    """The value index cache in ``tmp``, not the user's."""
    old = os.environ.get("ROUTE_GRAPH_CACHE")
    os.environ["ROUTE_GRAPH_CACHE"] = str(tmp / "cache")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ROUTE_GRAPH_CACHE", None)
        else:
            os.environ["ROUTE_GRAPH_CACHE"] = old


def render_scenario(scenario: Scenario) -> str:
    """The golden file's text: the scenario's content as indented JSON, one trailing newline."""
    with tempfile.TemporaryDirectory() as name, _private_cache(Path(name)):
        content = {"scenario": scenario.name, **scenario.build(Path(name))}
    return json.dumps(content, indent=1, ensure_ascii=False) + "\n"
