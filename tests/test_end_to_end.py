"""The real path: the offline default model answers real questions on real SQLite databases."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from route_graph import RouteConfig, build_route_graph, load_chat_model
from route_graph.cli import main as cli_main
from tests.fakes import shared_data_dir

pytestmark = pytest.mark.slow

SAMPLE_SIZE = 20
SAMPLE_SEED = 2025


@pytest.fixture(scope="module")
def llm():
    return load_chat_model()


def test_cli_answers_the_demo_question(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["ask", "--json", "How many customers are from Germany?"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["result"]["ok"] and out["result"]["rows"] == [[3]], out["sql"]
    assert out["trace"][-1]["stage"] == "finalize"


def test_graph_terminates_on_spider_valid_sample(llm) -> None:
    data = shared_data_dir()
    if data is None:
        pytest.fail("shared data not found: set ROUTE_GRAPH_DATA to the folder holding spider_train/")
    examples = json.loads((data / "spider_train" / "valid.json").read_text())
    sample = random.Random(SAMPLE_SEED).sample(examples, SAMPLE_SIZE)
    root = data / "spider_train" / "database"
    graphs = {
        db_id: build_route_graph(llm, root / db_id / f"{db_id}.sqlite", RouteConfig())
        for db_id in sorted({ex["db_id"] for ex in sample})
    }
    # Questions of all databases in flight at once: the local model micro-batches their calls.
    with ThreadPoolExecutor(max_workers=8) as pool:
        outputs = list(pool.map(lambda ex: graphs[ex["db_id"]].invoke({"question": ex["question"]}), sample))
    assert len(outputs) == SAMPLE_SIZE
    for out in outputs:
        assert out["sql"], out["trace"]
        assert [e["stage"] for e in out["trace"]][-1] == "finalize"
        assert out["trace"][0]["stage"] == "schema_link"
        assert all("llm_calls" in e for e in out["trace"][:-1])
    executable = sum(bool(out["result"]["ok"]) for out in outputs)
    print(f"\n{executable}/{SAMPLE_SIZE} final SQL queries execute")
    assert executable >= SAMPLE_SIZE // 2  # the 0.5B model is weak, but not that weak


def test_nc_repairs_a_failing_sql_on_a_spider_database(llm) -> None:
    """Issue 12: noise correction with the real model turns a failing SQL into the right answer.

    The noise_correct node runs on a state whose SQL fails on the real database (a wrong table and
    column name), as generate would leave it: NC's repair prompt gets the error and the full
    schema, and its repair is taken because it executes; it returns the gold query's rows.
    """
    from route_graph.graph.noise_correct import noise_correct
    from route_graph.graph.pipeline import Pipeline
    from route_graph.sql.execute import execute_sql
    from route_graph.sql.opening import open_database

    data = shared_data_dir()
    if data is None:
        pytest.fail("shared data not found: set ROUTE_GRAPH_DATA to the folder holding spider_train/")
    db = open_database(data / "spider_train" / "database" / "race_track" / "race_track.sqlite")
    question = "What are the years of opening for tracks with seating between 4000 and 5000?"
    gold = execute_sql(db, "SELECT year_opened FROM track WHERE seating BETWEEN 4000 AND 5000")
    broken = "SELECT opening_year FROM tracks WHERE seating BETWEEN 4000 AND 5000"
    failing = execute_sql(db, broken)
    assert not failing.ok and "tracks" in (failing.error or "")

    node = noise_correct(Pipeline(llm, db, RouteConfig()))
    update = node({"question": question, "sql": broken, "result": failing.to_dict()}, None, {})

    nc = update["trace"][0]
    assert nc["mode"] == "repair" and nc["problem"] == "error", nc
    assert nc["accepted"] and nc["executed"], nc
    assert update["stage"] == "noise_correct" and update["result"]["ok"]
    assert sorted(map(tuple, update["result"]["rows"])) == sorted(map(tuple, gold.rows)), update["sql"]
