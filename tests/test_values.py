"""Value retrieval: the index on a tiny SQLite file (bounds, disk cache, invalidation), the matcher,
the prompt block (absent = byte-identical prompts) and the graph with a scripted fake model."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from route_graph import RouteConfig, build_route_graph, prompts
from route_graph import values as V
from route_graph.graph.extras import ValueRetrieval as V_EXTRA
from route_graph.sql.opening import open_database
from tests.fakes import ScriptedChatModel, make_concert_db

SQL_FRENCH = "SELECT name FROM singer WHERE country = 'France'"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private disk cache and an empty memory cache for every test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ROUTE_GRAPH_CACHE", str(cache))
    V.clear_value_cache()
    yield cache
    V.clear_value_cache()


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    return make_concert_db(tmp_path / "concert.sqlite")


@pytest.fixture()
def queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL the index build runs (through the guarded executor)."""
    seen: list[str] = []
    real = V.execute_sql

    def counting(db, sql, **kwargs):
        seen.append(sql)
        return real(db, sql, **kwargs)

    monkeypatch.setattr(V, "execute_sql", counting)
    return seen


def fence(sql: str) -> str:
    return f"```sql\n{sql}\n```"


# ------------------------------------------------------------------------------ index and matching
def test_index_holds_distinct_text_values_of_text_columns(db_path: Path) -> None:
    index = V.build_value_index(open_database(db_path))
    by_column = {(t, c): vals for t, c, vals in index.columns}
    assert sorted(by_column[("singer", "country")]) == ["France", "UK"]
    assert sorted(by_column[("stadium", "name")]) == ["Stade de France", "Wembley"]
    assert not any(c in ("age", "year", "capacity") for _, c in by_column)  # numbers are not indexed
    assert index.complete and not index.skipped


def test_exact_match_ignores_case(db_path: Path) -> None:
    matches = V.match_values(open_database(db_path), "Which singers are from france?")
    assert matches[0] == V.ValueMatch("singer", "country", "France", 100.0, "france")
    assert V.render_matches(matches[:1]) == ["singer.country: 'France'"]


def test_fuzzy_match_finds_misspelled_values(db_path: Path) -> None:
    matches = V.match_values(open_database(db_path), "How old is Jaques, who sang at Wembly?")
    found = {(m.table, m.column, m.value) for m in matches}
    assert ("singer", "name", "Jacques") in found and ("stadium", "name", "Wembley") in found
    assert all(85 <= m.score < 100 for m in matches)


def test_quoted_phrases_and_limit(db_path: Path) -> None:
    db = open_database(db_path)
    phrases = V.candidate_phrases('Concerts at "Stade de France" in 2014 by singers', None, db.schema)
    assert phrases[0] == "Stade de France"
    assert "2014" not in phrases and "singers" not in phrases and "concerts" not in [p.lower() for p in phrases]
    matches = V.match_values(db, "Adele, Edith or Jacques from the UK or France?", limit=2)
    assert len(matches) == 2 and all(m.score == 100.0 for m in matches)


def test_no_match_below_threshold(db_path: Path) -> None:
    assert V.match_values(open_database(db_path), "Which singers are from Germany?") == []


def test_value_lines_escape_quotes() -> None:
    assert V.ValueMatch("t", "c", "O'Brien", 100.0).line() == "t.c: 'O''Brien'"


def test_bounds_cap_values_per_column_and_length(tmp_path: Path) -> None:
    path = tmp_path / "big.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, label TEXT, blurb TEXT)")
    conn.executemany(
        "INSERT INTO item (label, blurb) VALUES (?, ?)",
        [(f"label {i}", "x" * 200) for i in range(500)],
    )
    conn.commit()
    conn.close()
    bounds = V.ValueBounds(max_values_per_column=50, max_value_chars=80)
    index = V.build_value_index(open_database(path), bounds)
    by_column = {(t, c): vals for t, c, vals in index.columns}
    assert len(by_column[("item", "label")]) == 50
    assert ("item", "blurb") not in by_column  # every value too long
    total = V.build_value_index(open_database(path), V.ValueBounds(max_total_values=10))
    assert total.size == 10 and not total.complete
    assert total.skipped and total.skipped[0]["error"] == "index bound reached"


def test_disk_cache_is_reused_without_queries(db_path: Path, cache_dir: Path, queries: list[str]) -> None:
    first = V.value_index(open_database(db_path))
    assert queries, "the first build reads the database"
    assert list((cache_dir / "values").glob("*.json"))
    queries.clear()
    V.clear_value_cache()  # a new process: memory empty, disk cache present
    second = V.value_index(open_database(db_path))
    assert queries == []
    assert second.columns == first.columns


def test_memory_cache_is_reused(db_path: Path, queries: list[str]) -> None:
    db = open_database(db_path)
    V.value_index(db)
    queries.clear()
    V.match_values(db, "Singers from France")
    assert queries == []


def test_cache_invalidated_when_file_changes(db_path: Path, queries: list[str]) -> None:
    db = open_database(db_path)
    assert V.match_values(db, "Singers from Germany") == []
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO singer VALUES (4, 'Nena', 'Germany', 64)")
    conn.commit()
    conn.close()
    os.utime(db_path, ns=(os.stat(db_path).st_atime_ns, os.stat(db_path).st_mtime_ns + 10**9))
    queries.clear()
    matches = V.match_values(open_database(db_path), "Singers from Germany")
    assert queries, "a changed file is indexed again"
    assert [(m.column, m.value) for m in matches] == [("country", "Germany")]


def test_index_json_round_trip(db_path: Path) -> None:
    index = V.build_value_index(open_database(db_path))
    again = V.ValueIndex.from_json(index.to_json())
    assert again.columns == index.columns and again.bounds == index.bounds
    with pytest.raises(ValueError):
        V.ValueIndex.from_json({**index.to_json(), "format": 999})


# ------------------------------------------------------------------------------ prompts
def test_prompts_are_byte_identical_without_values() -> None:
    schema, question, sql, feedback = "CREATE TABLE t (a TEXT);", "What is a?", "SELECT a FROM t", "Rows: 1"
    for style in ("zero_shot", "few_shot"):
        for build in (
            lambda style=style, **kw: prompts.ts_messages(question, schema, style=style, **kw),
            lambda style=style, **kw: prompts.sl_messages(question, schema, style=style, **kw),
            lambda style=style, **kw: prompts.nc_messages(question, schema, sql, feedback, style=style, **kw),
            lambda style=style, **kw: prompts.nc_repair_messages(question, schema, sql, feedback, style=style, **kw),
            lambda style=style, **kw: prompts.cw_messages(question, schema, "SELECT ", style=style, **kw),
        ):
            plain = build()
            assert prompts.VALUES_HEADER not in plain[-1]["content"]
            assert f"Database schema:\n{schema}\n\nQuestion: {question}" in plain[-1]["content"]
            assert build(values=None) == plain
            assert build(values=[]) == plain
            assert build(values="") == plain
            with_values = build(values=["t.a: 'x'"])
            assert with_values[:-1] == plain[:-1]  # few-shot examples unchanged
            assert with_values[-1]["content"] != plain[-1]["content"]


def test_prompt_shows_values_after_the_schema() -> None:
    text = prompts.ts_messages(
        "Singers from france?", "CREATE TABLE singer (country TEXT);", values=["singer.country: 'France'"]
    )[-1]["content"]
    assert text.startswith(
        "Database schema:\nCREATE TABLE singer (country TEXT);\n\n"
        "-- Values in the database that match the question:\n-- singer.country: 'France'\n\n"
        "Question: Singers from france?"
    )


# ------------------------------------------------------------------------------ graph
def _run(db_path: Path, scripts: dict[str, list[str]], config: RouteConfig, extras: tuple = ("value_retrieval",)):
    llm = ScriptedChatModel(scripts=scripts)
    out = build_route_graph(llm, db_path, config, extras=extras).invoke({"question": "Which singers are from france?"})
    assert all(not lines for lines in llm.scripts.values()), llm.scripts
    return out, llm


def test_graph_shows_values_in_every_sql_prompt_and_trace(db_path: Path) -> None:
    out, llm = _run(
        db_path,
        {
            "sl": ['{"singer": ["name", "country"]}'],
            "ts": [fence("SELECT name FROM singer"), fence("SELECT name FROM singer WHERE country = 'Spain'")],
            "nc_repair": [fence(SQL_FRENCH)],
        },
        RouteConfig(continuation_writing=False, vote=False),
    )
    line = "-- singer.country: 'France'"
    assert {task for task, _ in llm.calls} == {"sl", "ts", "nc_repair"}
    assert all(line in prompt for _, prompt in llm.calls)
    assert [e["stage"] for e in out["trace"]][:2] == ["retrieve_values", "schema_link"]  # once, first
    found = out["trace"][0]
    assert found["value_matches"][0] == {
        "table": "singer", "column": "country", "value": "France", "score": 100.0, "phrase": "france"
    }
    assert "value_error" not in found
    assert out["sql"] == SQL_FRENCH


def test_graph_without_schema_linking_shows_values_to_generate(db_path: Path) -> None:
    out, llm = _run(
        db_path,
        {"ts": [fence(SQL_FRENCH)]},
        RouteConfig(schema_linking=False, noise_correction=False, continuation_writing=False),
        (V_EXTRA(limit=1),),
    )
    assert "-- singer.country: 'France'" in llm.calls[0][1]
    assert [e["stage"] for e in out["trace"]] == ["retrieve_values", "generate", "finalize"]
    assert [m["value"] for m in out["trace"][0]["value_matches"]] == ["France"]


def test_graph_off_by_default_sends_no_values(db_path: Path) -> None:
    out, llm = _run(
        db_path,
        {"ts": [fence(SQL_FRENCH)]},
        RouteConfig(schema_linking=False, noise_correction=False, continuation_writing=False),
        (),
    )
    assert prompts.VALUES_HEADER not in llm.calls[0][1]
    assert [e["stage"] for e in out["trace"]] == ["generate", "finalize"]


def test_index_failure_is_recorded_not_raised(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(V, "build_value_index", broken)
    out, llm = _run(
        db_path,
        {"ts": [fence(SQL_FRENCH)]},
        RouteConfig(schema_linking=False, noise_correction=False, continuation_writing=False),
    )
    found = out["trace"][0]
    assert found["value_matches"] == [] and found["value_error"] == "OSError: disk on fire"
    assert prompts.VALUES_HEADER not in llm.calls[0][1]
    assert out["sql"] == SQL_FRENCH


def test_new_question_in_a_thread_resets_the_matches(db_path: Path) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    llm = ScriptedChatModel(scripts={"ts": [fence(SQL_FRENCH), fence("SELECT name FROM singer")]})
    graph = build_route_graph(
        llm, db_path,
        RouteConfig(schema_linking=False, noise_correction=False, continuation_writing=False),
        extras=["value_retrieval"],
        checkpointer=InMemorySaver(),
    )
    thread = {"configurable": {"thread_id": "t"}}
    graph.invoke({"question": "Which singers are from france?"}, thread)
    out = graph.invoke({"question": "List every singer."}, thread)
    assert out["trace"][0]["value_matches"] == []
    assert prompts.VALUES_HEADER not in llm.calls[1][1]
