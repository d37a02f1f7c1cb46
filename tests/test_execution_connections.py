"""The executor and its connections (issue 15): waiting for a pooled connection counts toward the
timeout, DuckDB never prints a progress bar, and the executor stands without the database layer."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.pool import QueuePool

from route_graph import RouteConfig, build_route_graph
from route_graph.rendering import render_ddl
from route_graph.sql.database import Database
from route_graph.sql.execute import execute_sql
from route_graph.sql.opening import open_database
from tests.fakes import ScriptedChatModel, make_concert_db

REPO = Path(__file__).resolve().parents[1]
SQL = "SELECT name FROM singer WHERE country = 'France'"


def fence(sql: str) -> str:
    return f"```sql\n{sql}\n```"


# --------------------------------------------------------------------------- import circle


def test_execution_does_not_import_the_database_layer() -> None:
    code = (
        "import sys, route_graph.sql.execute\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('route_graph'))\n"
        "assert not {'route_graph.sql.database', 'route_graph.sql.opening'} & set(loaded), loaded\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    source = (REPO / "route_graph" / "sql" / "execute.py").read_text()
    assert "route_graph.sql.database" not in source and "from route_graph import" not in source


def test_package_names_still_import() -> None:
    import route_graph

    for name in route_graph.__all__:
        assert getattr(route_graph, name) is not None, name
    from route_graph import Database as Imported

    assert Imported is Database


# --------------------------------------------------------------------------- pool wait


class HeldPool:
    """A one-connection pool whose connection another thread holds until ``release``."""

    def __init__(self, path: Path) -> None:
        self.engine = sqlalchemy.create_engine(
            f"sqlite:///{path}", poolclass=QueuePool, pool_size=1, max_overflow=0, pool_timeout=30
        )
        self.db = Database(self.engine)
        render_ddl(self.db)  # schema and sample rows cached before the only connection is taken
        self._taken, self._release = threading.Event(), threading.Event()
        self._holder = threading.Thread(target=self._hold, daemon=True)
        self._holder.start()
        assert self._taken.wait(10)

    def _hold(self) -> None:
        conn = self.engine.raw_connection()
        self._taken.set()
        self._release.wait(60)
        conn.close()

    def release(self) -> None:
        self._release.set()
        self._holder.join(10)


def test_waiting_for_a_connection_counts_toward_the_timeout(tmp_path: Path) -> None:
    held = HeldPool(make_concert_db(tmp_path / "concert.sqlite"))
    start = time.monotonic()
    result = execute_sql(held.db, SQL, timeout_s=0.5)
    assert time.monotonic() - start < 0.5 + 1.0  # not the pool's own 30 s
    assert (result.ok, result.error_kind) == (False, "timeout")
    assert "no database connection became free within the 0.5 s limit" in (result.error or "")
    held.release()
    # The abandoned checkout gives its connection back: the pool is whole again.
    deadline = time.monotonic() + 10
    while held.engine.pool.checkedout() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert held.engine.pool.checkedout() == 0
    again = execute_sql(held.db, SQL, timeout_s=5)
    assert again.ok and sorted(r[0] for r in again.rows) == ["Edith", "Jacques"]


def test_threads_share_a_one_connection_pool_in_turn(tmp_path: Path) -> None:
    """Eight threads share a one-connection pool: all get it in turn, none times out."""
    db = open_database(
        sqlalchemy.create_engine(
            f"sqlite:///{make_concert_db(tmp_path / 'concert.sqlite')}",
            poolclass=QueuePool, pool_size=1, max_overflow=0,
        )
    )
    results: list = [None] * 8

    def run(i: int) -> None:
        results[i] = execute_sql(db, SQL, timeout_s=30)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None and r.ok and r.row_count == 2 for r in results)
    assert db.engine.pool.checkedout() == 0


def test_connection_wait_becomes_model_feedback_not_an_exception(tmp_path: Path) -> None:
    held = HeldPool(make_concert_db(tmp_path / "concert.sqlite"))
    try:
        llm = ScriptedChatModel(scripts={"ts": [fence(SQL)], "nc_repair": [fence(SQL)]})
        config = RouteConfig(
            schema_linking=False, continuation_writing=False, vote=False, rescue=False, execution_timeout_s=0.3
        )
        out = build_route_graph(llm, held.db, config).invoke({"question": "Which singers are from France?"})
    finally:
        held.release()
    assert out["result"]["error_kind"] == "timeout"
    repair_prompt = next(p for task, p in llm.calls if task == "nc_repair")
    assert "no database connection became free" in repair_prompt


# --------------------------------------------------------------------------- DuckDB progress bar


@pytest.mark.parametrize("opened_by", ["route_graph", "user"])
def test_duckdb_prints_no_progress_bar(tmp_path: Path, capfd: pytest.CaptureFixture[str], opened_by: str) -> None:
    duckdb = pytest.importorskip("duckdb", reason="optional extra: pip install 'route-graph[duckdb]'")
    pytest.importorskip("duckdb_engine", reason="optional extra: pip install 'route-graph[duckdb]'")
    path = tmp_path / "numbers.duckdb"
    conn = duckdb.connect(str(path))
    conn.execute("CREATE TABLE n AS SELECT range AS x FROM range(2000000)")
    conn.close()
    if opened_by == "route_graph":
        db = open_database(path)
    else:
        engine = sqlalchemy.create_engine(f"duckdb:///{path}", connect_args={"read_only": True})
        db = open_database(engine)
    # DuckDB shows its bar after 2 s; after 10 ms here, so a short query would print one.
    sqlalchemy.event.listen(db.engine, "connect", lambda c, _: c.execute("SET progress_bar_time = 10"))
    db.engine.dispose()
    capfd.readouterr()
    result = execute_sql(
        db, "SELECT count(*) FROM n AS a, n AS b WHERE a.x < 300 AND (a.x * b.x) % 7 = 3", timeout_s=60
    )
    out, _ = capfd.readouterr()
    assert result.ok, result.error
    assert out == ""
