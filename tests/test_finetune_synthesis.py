"""MSFT synthesis on a tiny SQLite database, every target verified by execution, and the prompts
checked against what the MCP graph really sends (training must see inference's exact text)."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import pytest

from finetune.config import SynthConfig
from finetune.data.records import Record, read_jsonl, write_jsonl
from finetune.data.synthesis import Synthesizer, SynthReport, gold_sql_of
from route_graph import RouteConfig, build_route_graph, prompts
from route_graph.evaluation.datasets import Example
from route_graph.evaluation.metrics import gold_order_matters, results_match
from route_graph.linking import links_from_sql, validate_links, with_join_keys
from route_graph.rendering import recall_first_links
from route_graph.sql.execute import execute_sql
from route_graph.sql.opening import open_database
from route_graph.sql.result import summarize_result
from route_graph.views import ViewConfig, full_schema_text, linked_schema_text, parsing
from tests.fakes import ScriptedChatModel, make_concert_db

THREE_TABLES = (
    "SELECT DISTINCT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
    "JOIN concert AS T3 ON T2.concert_id = T3.concert_id WHERE T3.year = 2014"
)
CONCERT_PAIRS: list[tuple[str, str, str | None]] = [
    ("How many singers are from France?", "SELECT count(*) FROM singer WHERE country  =  'France'", None),
    ("Names of singers older than 40, oldest first.", "SELECT name FROM singer WHERE age > 40 ORDER BY age DESC", None),
    (
        "Which concerts were held in Wembley?",
        "SELECT T1.concert_name FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id = T2.stadium_id WHERE T2.name = 'Wembley'",
        None,
    ),
    ("What is the average age of singers per country?", "SELECT country, avg(age) FROM singer GROUP BY country", None),
    ("Which singers performed in 2014?", THREE_TABLES, None),
    ("What is the largest stadium capacity?", "SELECT max(capacity) FROM stadium", None),
    ("Who is the youngest singer?", "SELECT name FROM singer ORDER BY age LIMIT 1", None),
    ("How many French singers are there?", "select count(*) from singer where country = 'France';", "French means country = 'France'"),
    ("List the singers' countries.", "SELECT DISTINCT country FROM singer", None),
    ("Which singers are not from France?", "SELECT name FROM singer WHERE country != 'France'", None),
]


def concert_examples(db_id: str = "concert") -> list[Example]:
    return [Example(id=i, db_id=db_id, question=q, gold_sql=sql, hint=hint) for i, (q, sql, hint) in enumerate(CONCERT_PAIRS)]


@pytest.fixture()
def db(tmp_path: Path):
    return open_database(make_concert_db(tmp_path / "concert.sqlite"))


def synthesize(
    db, cfg: SynthConfig | None = None, route: RouteConfig | ViewConfig | None = None, seed: int = 0,
    examples: list[Example] | None = None,
):
    report = SynthReport()
    synth = Synthesizer(route or RouteConfig(), cfg or SynthConfig(), seed=seed)
    records = list(synth.run(examples or concert_examples(), lambda _db_id: db, report))
    return records, report


def by_example(records: list[Record], task: str, variant: str | None = None) -> dict[int, Record]:
    return {r.example_id: r for r in records if r.task == task and (variant is None or r.variant == variant)}


def run_sql(db, sql: str):
    return execute_sql(db, sql, timeout_s=5.0, max_rows=1000)


# ------------------------------------------------------------------------------------ the tasks
def test_every_task_for_every_example_with_counts(db) -> None:
    records, report = synthesize(db)
    n = len(CONCERT_PAIRS)
    assert report.by_task == {"ts": 2 * n, "sl": n, "nc": n, "cw": n}
    assert report.examples == n and report.records == len(records) == 5 * n
    assert not report.skipped
    for record in records:
        assert record.prompt[0]["role"] == "system" and record.prompt[-1]["role"] == "user"
        assert record.completion == [{"role": "assistant", "content": record.answer}]


def test_ts_targets_are_the_gold_and_execute(db) -> None:
    records, _ = synthesize(db, SynthConfig(qualify_style="gold"))
    for example in concert_examples():
        gold = gold_sql_of(example, SynthConfig())
        for variant in ("full_schema", "linked_schema"):
            record = by_example(records, "ts", variant)[example.id]
            sql = parsing.parse_sql(record.answer)
            assert sql == gold
            assert run_sql(db, sql).ok
            assert f"Question: {example.question}" in record.prompt[-1]["content"]
    # Whitespace is normalised outside quotes; the trailing ';' is gone.
    assert gold_sql_of(concert_examples()[0], SynthConfig()) == "SELECT count(*) FROM singer WHERE country = 'France'"
    assert gold_sql_of(concert_examples()[7], SynthConfig()) == "select count(*) from singer where country = 'France'"


def test_string_quotes_single_rewrites_double_quoted_literals_with_the_same_rows(db) -> None:
    examples = [
        Example(id=0, db_id="concert", question="Singers from France?", gold_sql='SELECT name FROM singer WHERE country  =  "France"'),
        Example(id=1, db_id="concert", question="Singers older than 40?", gold_sql="SELECT name FROM singer WHERE age > 40"),
    ]
    requoted, report = synthesize(db, SynthConfig(string_quotes="single"), examples=examples)
    kept, kept_report = synthesize(db, SynthConfig(), examples=examples)  # default: the gold's quotes
    ts = by_example(requoted, "ts", "full_schema")
    assert parsing.parse_sql(ts[0].answer) == "SELECT name FROM singer WHERE country = 'France'"
    assert run_sql(db, parsing.parse_sql(ts[0].answer)).rows == run_sql(db, examples[0].gold_sql).rows
    assert parsing.parse_sql(ts[1].answer) == "SELECT name FROM singer WHERE age > 40"
    assert report.to_dict()["targets_single_quoted"] == 1
    assert parsing.parse_sql(by_example(kept, "ts", "full_schema")[0].answer) == 'SELECT name FROM singer WHERE country = "France"'
    assert kept_report.to_dict()["targets_single_quoted"] == 0


def test_ts_targets_use_table_names_for_aliases_with_the_same_result(db) -> None:
    records, report = synthesize(db)  # default: qualify_style="table_names"
    rewritten = 0
    for example in concert_examples():
        gold = gold_sql_of(example, SynthConfig())
        sql = parsing.parse_sql(by_example(records, "ts", "full_schema")[example.id].answer)
        assert run_sql(db, sql).rows == run_sql(db, gold).rows
        if " AS T" in gold:
            assert " AS T" not in sql and "T1." not in sql
            rewritten += 1
        else:
            assert sql == gold
    assert rewritten >= 2 and report.to_dict()["targets_qualified_with_table_names"] == rewritten
    wembley = next(e for e in concert_examples() if "Wembley" in e.gold_sql)
    assert parsing.parse_sql(by_example(records, "ts", "linked_schema")[wembley.id].answer) == (
        "SELECT concert.concert_name FROM concert JOIN stadium ON concert.stadium_id = stadium.stadium_id "
        "WHERE stadium.name = 'Wembley'"
    )


def test_ts_linked_variant_sees_only_linked_tables(db) -> None:
    records, _ = synthesize(db, SynthConfig(extra_table_prob=0.0))
    linked = by_example(records, "ts", "linked_schema")
    assert "CREATE TABLE stadium" not in linked[0].prompt[-1]["content"]  # singer only
    assert "CREATE TABLE singer" in linked[0].prompt[-1]["content"]
    full = by_example(records, "ts", "full_schema")
    assert all(f"CREATE TABLE {t}" in full[0].prompt[-1]["content"] for t in ("stadium", "singer", "concert"))


def test_extra_table_counts_draw_joinable_tables_first(db) -> None:
    """extra_table_counts sets how many unneeded tables the linked view shows; a table a foreign
    key joins to a linked one comes first (the inference linker's extras mostly are)."""
    def linked_tables(cfg: SynthConfig) -> set[str]:
        records, _ = synthesize(db, cfg)
        prompt = by_example(records, "ts", "linked_schema")[0].prompt[-1]["content"]  # gold: singer only
        return {t for t in ("stadium", "singer", "concert", "singer_in_concert") if f"CREATE TABLE {t} (" in prompt}

    assert linked_tables(SynthConfig(extra_table_counts=[1.0])) == {"singer"}
    # one extra: singer_in_concert is the only table a foreign key joins to singer
    assert linked_tables(SynthConfig(extra_table_counts=[0.0, 1.0])) == {"singer", "singer_in_concert"}
    # more than the schema has: capped at every other table
    assert linked_tables(SynthConfig(extra_table_counts=[0.0, 0.0, 0.0, 0.0, 1.0])) == {
        "singer", "singer_in_concert", "concert", "stadium"}
    # the option unset keeps extra_table_prob's single draw (older data stays byte-identical)
    assert linked_tables(SynthConfig(extra_table_prob=0.0)) == {"singer"}


def test_hint_reaches_every_prompt(db) -> None:
    records, _ = synthesize(db)
    for record in (r for r in records if r.example_id == 7):
        assert "Hint: French means country = 'France'" in record.prompt[-1]["content"]


def test_sl_targets_match_links_from_sql_and_parse_back(db) -> None:
    records, _ = synthesize(db)
    sl = by_example(records, "sl")
    for example in concert_examples():
        gold = gold_sql_of(example, SynthConfig())
        links = with_join_keys(db.schema, links_from_sql(gold, db.schema, "sqlite"))
        assert sl[example.id].answer == prompts.sl_completion(links)
        # What the graph does with the answer gives the links back unchanged.
        parsed, dropped = validate_links(parsing.parse_links(sl[example.id].answer), db.schema)
        assert parsed == links and not dropped
    assert json.loads(sl[4].answer) == {
        "singer": ["singer_id", "name"],
        "concert": ["concert_id", "year"],
        "singer_in_concert": ["concert_id", "singer_id"],
    }


def test_sl_all_columns_keeps_every_column_of_the_linked_tables(db) -> None:
    records, _ = synthesize(db, SynthConfig(sl_all_columns=True))
    answer = json.loads(by_example(records, "sl")[4].answer)
    assert answer == {
        "singer": ["singer_id", "name", "country", "age"],
        "concert": ["concert_id", "concert_name", "year", "stadium_id"],
        "singer_in_concert": ["concert_id", "singer_id"],
    }


def test_nc_records_verified_by_execution_and_balanced(db) -> None:
    records, report = synthesize(db)
    targets = {i: parsing.parse_sql(r.answer) for i, r in by_example(records, "ts", "full_schema").items()}
    nc = [r for r in records if r.task == "nc"]
    incorrect = [r for r in nc if r.variant != "correct"]
    assert abs(len(incorrect) - len(nc) / 2) <= 1, report.by_variant
    for record in nc:
        example = concert_examples()[record.example_id]
        gold = gold_sql_of(example, SynthConfig())
        gold_result = run_sql(db, gold)
        text = record.prompt[-1]["content"]
        candidate = text.split("Candidate SQL:\n```sql\n", 1)[1].split("\n```", 1)[0]
        result = run_sql(db, candidate)
        feedback = summarize_result(result, max_rows=RouteConfig().feedback_rows, value_chars=RouteConfig().feedback_value_chars)
        assert f"Execution result:\n{feedback}\n" in text
        same = results_match(gold_result.rows, result.rows, order_matters=gold_order_matters(gold))
        verdict = parsing.parse_verdict(record.answer, candidate)
        if record.variant == "correct":
            assert record.answer == prompts.NC_CORRECT and verdict.correct is True
            assert result.ok and same
        else:
            assert record.variant.startswith("corruption:")
            assert result.ok and not same, (candidate, gold)
            assert verdict.correct is False and verdict.sql == targets[record.example_id]  # the TS target


def test_nc_incorrect_ratio_is_configurable(db) -> None:
    records, _ = synthesize(db, SynthConfig(nc_incorrect_ratio=1.0))
    nc = [r for r in records if r.task == "nc"]
    assert sum(r.variant != "correct" for r in nc) >= len(nc) - 2  # all but examples with no differing edit
    records, _ = synthesize(db, SynthConfig(nc_incorrect_ratio=0.0))
    assert all(r.variant == "correct" for r in records if r.task == "nc")


def test_cw_completions_start_with_the_prefix_and_are_the_gold(db) -> None:
    records, report = synthesize(db)
    targets = {i: parsing.parse_sql(r.answer) for i, r in by_example(records, "ts", "full_schema").items()}
    cw = [r for r in records if r.task == "cw"]
    assert {r.variant for r in cw} == {"bare_prefix", "clause_prefix"}, report.by_variant
    for record in cw:
        text = record.prompt[-1]["content"]
        prefix = text.split("answers the question:\n", 1)[1].split(" ...\n", 1)[0]
        sql = parsing.parse_sql(record.answer)
        assert sql.startswith(prefix), (prefix, sql)
        assert sql.lower() == targets[record.example_id].lower()  # every task teaches one target text
        assert run_sql(db, sql).ok
        if record.variant == "bare_prefix":
            assert prefix == "SELECT"  # the inference prefix "SELECT " as the prompt shows it


def test_cw_all_bare_when_ratio_is_one(db) -> None:
    records, _ = synthesize(db, SynthConfig(cw_bare_prefix_ratio=1.0))
    assert {r.variant for r in records if r.task == "cw"} == {"bare_prefix"}
    lower = by_example(records, "cw")[7]
    assert parsing.parse_sql(lower.answer).startswith("SELECT count(*) from singer")  # prefix case kept


def test_task_subset_and_failing_gold_skipped(db) -> None:
    examples = concert_examples() + [Example(id=99, db_id="concert", question="?", gold_sql="SELECT nope FROM singer")]
    report = SynthReport()
    synth = Synthesizer(RouteConfig(), SynthConfig(tasks=["sl", "cw"]), seed=0)
    records = list(synth.run(examples, lambda _: db, report))
    assert {r.task for r in records} == {"sl", "cw"}
    assert [s["reason"].split(":")[0] for s in report.skipped] == ["gold fails"]


def test_deterministic_with_a_seed(db) -> None:
    first, _ = synthesize(db, seed=3)
    again, _ = synthesize(db, seed=3)
    other, _ = synthesize(db, seed=4)
    assert [r.to_dict() for r in first] == [r.to_dict() for r in again]
    assert [r.to_dict() for r in first] != [r.to_dict() for r in other]


def test_route_config_numbers_drive_the_renderings(db) -> None:
    route = RouteConfig(link_sample_rows=1, generate_sample_rows=2, feedback_value_chars=4)
    records, _ = synthesize(db, SynthConfig(extra_table_prob=0.0), route=route)
    full = by_example(records, "ts", "full_schema")[0].prompt[-1]["content"]
    linked = by_example(records, "ts", "linked_schema")[0].prompt[-1]["content"]
    assert "1 example row from table singer" in full and "2 example rows from table singer" in linked
    assert "Fran…" in linked and "France" not in linked.split("Question:")[0]  # values cut
    assert full_schema_text(db, route) in full


def test_jsonl_round_trip_and_hf_datasets_loads_it(db, tmp_path: Path) -> None:
    records, _ = synthesize(db)
    path = tmp_path / "records.jsonl"
    assert write_jsonl(records, path) == len(records)
    assert list(read_jsonl(path)) == records
    packed = tmp_path / "records.jsonl.gz"  # mined records are committed compressed
    packed.write_bytes(gzip.compress(path.read_bytes()))
    assert list(read_jsonl(packed)) == records
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset("json", data_files=str(path), split="train")
    assert len(loaded) == len(records)
    assert set(loaded.column_names) >= {"task", "prompt", "completion"}
    assert loaded[0]["completion"][0]["role"] == "assistant"


# ------------------------------------------------------------- same text as the graph at inference
def fence(sql: str) -> str:
    return f"```sql\n{sql}\n```"


def test_prompts_are_exactly_what_the_graph_sends(db, tmp_path: Path) -> None:
    """Script the graph with the gold answers; its SL, draft-TS, generate-TS, NC and CW prompts
    must equal the synthesized records' prompts for the same question."""
    route = RouteConfig(nc_verdict=True)  # the verdict prompt is compared too
    cfg = SynthConfig(extra_table_prob=0.0, cw_bare_prefix_ratio=1.0, nc_incorrect_ratio=1.0)
    records, _ = synthesize(db, cfg, route=route)
    example = concert_examples()[4]  # three tables: hard, so CW runs too
    gold = gold_sql_of(example, cfg)
    nc_record = by_example(records, "nc")[4]
    candidate = nc_record.prompt[-1]["content"].split("```sql\n", 1)[1].split("\n```", 1)[0]
    links = links_from_sql(gold, db.schema, "sqlite")
    llm = ScriptedChatModel(
        scripts={
            "sl": [prompts.sl_completion(links)],
            "ts": [fence(gold), fence(candidate)],  # draft = gold; generation = the NC candidate
            "nc": [prompts.NC_CORRECT],
            "cw": [fence(gold)],
        }
    )
    out = build_route_graph(llm, db, route).invoke({"question": example.question})
    sent = {}
    for task, text in llm.calls:
        sent.setdefault(task, []).append(text)
    # Recall-first linking: the graph's links and the linked-schema records both show the kept
    # tables with all their columns (rendering.recall_first_links).
    expanded, _ = recall_first_links(db, route, links, example.question)
    assert out["links"] == expanded
    assert sent["sl"] == [by_example(records, "sl")[4].prompt[-1]["content"]]
    assert sent["ts"][0] == by_example(records, "ts", "full_schema")[4].prompt[-1]["content"]
    assert sent["ts"][1] == by_example(records, "ts", "linked_schema")[4].prompt[-1]["content"]
    assert sent["nc"] == [nc_record.prompt[-1]["content"]]
    assert sent["cw"] == [by_example(records, "cw")[4].prompt[-1]["content"]]
    # The system message is the one the graph sends as well (same prompt functions).
    assert by_example(records, "sl")[4].prompt == prompts.sl_messages(example.question, full_schema_text(db, route))
    assert by_example(records, "cw")[4].prompt == prompts.cw_messages(
        example.question, full_schema_text(db, route), route.continuation_prefix
    )
    # With CW on the reduced schema (``cw_full_schema`` off), the records follow.
    reduced = replace(route, cw_full_schema=False)
    reduced_records, _ = synthesize(db, cfg, route=reduced)
    assert by_example(reduced_records, "cw")[4].prompt == prompts.cw_messages(
        example.question, linked_schema_text(db, reduced, expanded), route.continuation_prefix
    )


def test_few_shot_style_follows_the_route_config(db) -> None:
    records, _ = synthesize(db, route=replace(RouteConfig(), prompt_style="few_shot"))
    # system, example user, example answer(s), user: NC's verdict has one correct and one wrong example
    assert all(len(r.prompt) == (6 if r.task == "nc" else 4) for r in records)


def test_value_retrieval_reaches_the_records_as_the_graph_shows_it(db) -> None:
    route = ViewConfig(value_retrieval=True)  # the graph's value_retrieval extra
    records, _ = synthesize(db, SynthConfig(extra_table_prob=0.0), route=route)
    france = by_example(records, "ts", "full_schema")[0].prompt[-1]["content"]
    assert "-- singer.country: 'France'" in france
    # Without the option the records carry no values block.
    plain, _ = synthesize(db, SynthConfig(extra_table_prob=0.0))
    assert "Values in the database" not in by_example(plain, "ts", "full_schema")[0].prompt[-1]["content"]
