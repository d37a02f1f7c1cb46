"""The rescue stage: name guesses and sampled repairs when no candidate SQL executes, and the
close-name guesses themselves (``repair.closest_name_fix``) on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from route_graph import RouteConfig, build_route_graph
from route_graph.repair import closest_name_fix, join_owner_table
from route_graph.sql.execute import execute_sql
from route_graph.sql.opening import open_database
from tests.fakes import SamplingChatModel, make_concert_db

SQL_FRENCH = "SELECT name FROM singer WHERE country = 'France'"
JOIN = "FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id"


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_concert_db(Path(tmp_path_factory.mktemp("rescue")) / "concert.sqlite")


@pytest.fixture(scope="module")
def db(db_path: Path):
    return open_database(db_path)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # an unqualified misspelt column: the closest column of the query's table
        ("SELECT nme FROM singer WHERE country = 'France'", SQL_FRENCH),
        # a qualified one: the closest column of that alias's table, qualifier kept
        (f"SELECT T1.singer_name {JOIN}", f"SELECT T1.name {JOIN}"),
        # nothing close in the alias's table: the closest of the scope, re-qualified to its owner
        (f"SELECT T2.nam {JOIN}", f"SELECT T1.name {JOIN}"),
        # a misspelt table
        ("SELECT name FROM singers", "SELECT name FROM singer"),
        # an ambiguous column: the first table of the scope that has it
        (
            "SELECT singer_id FROM singer JOIN singer_in_concert ON singer.singer_id = singer_in_concert.singer_id",
            "SELECT singer.singer_id FROM singer JOIN singer_in_concert ON singer.singer_id = singer_in_concert.singer_id",
        ),
        # no similar name at all: no guess
        ("SELECT zzzzzz FROM singer", None),
        # a syntax error is not a name problem
        ("SELECT name FORM singer", None),
    ],
)
def test_closest_name_fix_fixture_pairs(db, sql: str, expected: str | None) -> None:
    error = execute_sql(db, sql).error
    assert error  # every input fails on the real database
    fixed = closest_name_fix(sql, error, db.schema, db.dialect)
    assert fixed == expected
    if fixed is not None:
        assert execute_sql(db, fixed).ok


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # the one table with a key to singer_in_concert that has "name" is joined in
        (
            "SELECT name FROM singer_in_concert WHERE concert_id = 1",
            (
                "SELECT singer.name FROM singer_in_concert JOIN singer ON singer_in_concert.singer_id = singer.singer_id "
                "WHERE singer_in_concert.concert_id = 1"
            ),
        ),
        # an alias is kept, and the key may point either way (stadium <- concert)
        (
            "SELECT c.concert_name FROM concert AS c WHERE capacity > 85000",
            (
                "SELECT c.concert_name FROM concert AS c JOIN stadium ON c.stadium_id = stadium.stadium_id "
                "WHERE stadium.capacity > 85000"
            ),
        ),
        # a query that already joins is not rewritten
        (f"SELECT T1.name, year {JOIN}", None),
        # no table with a key to singer has the column
        ("SELECT concert_name FROM singer", None),
    ],
)
def test_join_owner_table_fixture_pairs(db, sql: str, expected: str | None) -> None:
    error = execute_sql(db, sql).error
    assert error
    fixed = join_owner_table(sql, error, db.schema, db.dialect)
    assert fixed == expected
    if fixed is not None:
        assert execute_sql(db, fixed).ok


def test_closest_name_fix_refuses_a_tie(tmp_path: Path) -> None:
    path = make_concert_db(tmp_path / "tie.sqlite", ["CREATE TABLE pair (abx TEXT, aby TEXT)"])
    tie = open_database(path)
    sql = "SELECT abz FROM pair"
    assert closest_name_fix(sql, execute_sql(tie, sql).error, tie.schema, tie.dialect) is None


def fence(sql: str) -> str:
    return f"```sql\n{sql}\n```"


def run(db_path: Path, scripts: dict[str, list[str]], config: RouteConfig | None = None):
    llm = SamplingChatModel(scripts=scripts)
    out = build_route_graph(llm, db_path, config).invoke({"question": "Which singers are from France?"})
    assert all(not lines for lines in llm.scripts.values()), llm.scripts  # every scripted call was made
    return out, llm


def rescue_entry(out) -> dict:
    return next(e for e in out["trace"] if e["stage"] == "rescue")


BROKEN = "SELECT zzzzzz FROM singer"  # no close name: only a model can repair it


def test_rescue_samples_repairs_until_one_executes(db_path: Path) -> None:
    out, llm = run(
        db_path,
        {
            "sl": ['{"singer": ["name"]}'],
            "ts": [fence(BROKEN), fence(BROKEN)],
            # NC's greedy repair, then the rescue's samples: one fails, the next executes
            "nc_repair": [fence(BROKEN), fence("SELECT qqqqqq FROM singer"), fence(SQL_FRENCH)],
        },
        RouteConfig(continuation_writing=False),
    )
    entry = rescue_entry(out)
    assert entry["accepted"] and entry["executed"] and entry["proposed_sql"] == SQL_FRENCH
    assert [a["kind"] for a in entry["attempts"]] == ["names", "sample", "sample"]
    assert entry["llm_calls"] == 2
    # the samples are drawn at the configured temperature; the greedy repair had none
    assert [t for task, t in llm.temperatures if task == "nc_repair"] == [None, 0.7, 0.7]
    assert out["sql"] == SQL_FRENCH and out["result"]["ok"] and out["stage"] == "rescue"
    assert out["sql_by_stage"]["rescue"] == SQL_FRENCH


def test_rescue_guesses_names_before_asking_the_model(db_path: Path) -> None:
    out, llm = run(
        db_path,
        {
            "sl": ['{"singer": ["name"]}'],
            "ts": [fence(BROKEN), fence("SELECT nme FROM singer WHERE country = 'France'")],
            "nc_repair": [fence(BROKEN)],
        },
        RouteConfig(continuation_writing=False),
    )
    entry = rescue_entry(out)
    assert entry["accepted"] and entry["llm_calls"] == 0 and entry["attempts"][-1]["kind"] == "names"
    assert out["sql"] == SQL_FRENCH and out["stage"] == "rescue"
    assert [t for t, _ in llm.calls].count("nc_repair") == 1  # only NC's own repair


def test_rescue_gives_up_after_its_samples(db_path: Path) -> None:
    out, _ = run(
        db_path,
        {
            "sl": ['{"singer": ["name"]}'],
            "ts": [fence(BROKEN), fence(BROKEN)],
            "nc_repair": [fence(BROKEN), "no SQL here", fence(BROKEN)],
        },
        RouteConfig(continuation_writing=False, rescue_samples=2),
    )
    entry = rescue_entry(out)
    assert not entry["accepted"] and entry["proposed_sql"] is None
    assert out["sql"] == BROKEN and not out["result"]["ok"]


def test_rescue_does_not_run_when_the_draft_executes(db_path: Path) -> None:
    out, _ = run(
        db_path,
        {"sl": ['{"singer": ["name"]}'], "ts": [fence(SQL_FRENCH), fence(BROKEN)], "nc_repair": [fence(BROKEN)]},
        RouteConfig(continuation_writing=False),
    )
    assert "rescue" not in [e["stage"] for e in out["trace"]]
    assert out["sql"] == SQL_FRENCH  # finalize's fallback to the executing draft


def test_rescue_off_returns_the_failing_sql(db_path: Path) -> None:
    out, _ = run(
        db_path,
        {
            "sl": ['{"singer": ["name"]}'],
            "ts": [fence(BROKEN), fence("SELECT nme FROM singer")],
            "nc_repair": [fence(BROKEN)],
        },
        RouteConfig(continuation_writing=False, rescue=False),
    )
    assert "rescue" not in [e["stage"] for e in out["trace"]]
    assert not out["result"]["ok"]


def test_rescue_runs_after_continuation_writing_fails(db_path: Path) -> None:
    out, _ = run(
        db_path,
        {
            "sl": ['{"singer": ["name"]}'],
            "ts": [fence(BROKEN), fence(BROKEN)],
            "nc_repair": [fence(BROKEN), fence(SQL_FRENCH)],
            "cw": [fence(BROKEN)],
        },
        RouteConfig(rescue_samples=1),
    )
    order = [e["stage"] for e in out["trace"]]
    assert order.index("continue_write") < order.index("rescue") < order.index("finalize")
    assert out["sql"] == SQL_FRENCH and out["stage"] == "rescue"


def test_rescue_samples_out_of_range_is_a_config_error() -> None:
    from route_graph.errors import ConfigError

    with pytest.raises(ConfigError, match="rescue_samples"):
        RouteConfig(rescue_samples=-1)
