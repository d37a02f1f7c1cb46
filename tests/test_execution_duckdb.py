"""DuckDB through a user's own read-write engine (issue 15): no file read or written, nothing kept.

``open_database(path)`` opens DuckDB files read-only with external access off, but a user's
``create_engine("duckdb:///file.duckdb")`` is read-write with external access on, and DuckDB
cannot switch that off for one query. These tests hold the executor to the same promise there:
sqlglot's guard and DuckDB's own parse (``json_serialize_sql``) each refuse on their own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import sqlalchemy

from route_graph.sql import execute as sql_execute
from route_graph.sql.execute import execute_sql
from route_graph.sql.guard import check_read_only
from route_graph.sql.opening import open_database

duckdb = pytest.importorskip("duckdb", reason="optional extra: pip install 'route-graph[duckdb]'")
pytest.importorskip("duckdb_engine", reason="optional extra: pip install 'route-graph[duckdb]'")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def user_duckdb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(Database on a read-write user engine, its file, a watched working dir, a secret file)."""
    work = tmp_path / "work"
    work.mkdir()
    path = tmp_path / "victim.duckdb"
    conn = duckdb.connect(str(path))
    conn.execute("CREATE TABLE t (id INTEGER, name VARCHAR); INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    conn.close()
    other = tmp_path / "other.duckdb"
    conn = duckdb.connect(str(other))
    conn.execute("CREATE TABLE secret AS SELECT 'sekrit-duck' AS s")
    conn.close()
    (tmp_path / "secret.csv").write_text("s\nsekrit-csv\n")
    monkeypatch.chdir(work)
    engine = sqlalchemy.create_engine(f"duckdb:///{path}")  # read-write, external access on
    yield open_database(engine), path, work, tmp_path
    engine.dispose()


def _file_attacks(tmp: Path) -> list[str]:
    other, csv, out = tmp / "other.duckdb", tmp / "secret.csv", tmp / "work"
    return [
        f"SELECT * FROM read_duckdb('{other}')",
        f"SELECT * FROM read_duckdb('{other}', table_name='secret')",
        f"SELECT * FROM read_single_csv_file('{csv}')",
        f"SELECT * FROM read_csv('{csv}')",
        f"SELECT * FROM read_csv(['{csv}'])",
        f"SELECT * FROM read_csv_auto('{csv}')",
        f"SELECT * FROM '{csv}'",
        f"SELECT * FROM \"{csv}\"",
        f"SELECT * FROM read_text('{csv}')",
        f"SELECT content FROM read_blob('{csv}')",
        f"SELECT * FROM \"READ_TEXT\"('{csv}')",
        f"SELECT * FROM Read_Text('{csv}')",
        f"SELECT * FROM main.read_text('{csv}')",
        f"SELECT * FROM sniff_csv('{csv}')",
        f"SELECT * FROM glob('{tmp}/*')",
        "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 42'))",
        f"SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT * FROM read_text(''{csv}'')'))",
        f"SELECT * FROM enable_profiling(format='json', save_location='{out}/profile.json')",
        f"SELECT * FROM enable_logging(storage='file', storage_path='{out}/logs')",
        "SELECT * FROM enable_logging()",
        "SELECT * FROM disable_logging()",
        "SELECT write_log('x')",
        f"COPY t TO '{out}/copy.csv'",
        f"COPY (SELECT * FROM t) TO '{out}/copy.parquet' (FORMAT parquet)",
        f"EXPORT DATABASE '{out}/export'",
        f"ATTACH '{out}/attached.duckdb' AS a",
        f"ATTACH '{other}' AS o (READ_ONLY)",
        "INSTALL httpfs",
        "LOAD httpfs",
        "PRAGMA enable_profiling",
        f"PRAGMA profiling_output = '{out}/p.txt'",
        f"SET profiling_output = '{out}/p.txt'",
        "SET enable_external_access = false",
        "CALL enable_profiling()",
        "SELECT * FROM checkpoint()",
        "CHECKPOINT",
        "SELECT getenv('HOME')",
        "SELECT * FROM duckdb_secrets()",
        "SELECT * FROM query('SELECT * FROM t')",
        "SELECT * FROM query_table('t')",
        "DELETE FROM t",
        "INSERT INTO t VALUES (3, 'c')",
        "CREATE TABLE x AS SELECT 1",
    ]


def _unchanged(db, path: Path, work: Path, digest_rows) -> None:
    assert execute_sql(db, "SELECT id, name FROM t ORDER BY id").rows == digest_rows
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("guard", ["both", "duckdb_parser_only"])
def test_user_read_write_engine_reads_and_writes_no_file(user_duckdb, monkeypatch, guard: str) -> None:
    db, path, work, tmp = user_duckdb
    rows = execute_sql(db, "SELECT id, name FROM t ORDER BY id").rows
    assert rows == [(1, "a"), (2, "b")]
    if guard == "duckdb_parser_only":
        monkeypatch.setattr(sql_execute, "check_read_only", lambda sql, dialect="duckdb": None)
    for sql in _file_attacks(tmp):
        if guard == "both":
            assert check_read_only(sql, "duckdb"), f"the guard allowed {sql!r}"
        result = execute_sql(db, sql, timeout_s=5)
        assert (result.ok, result.error_kind) == (False, "rejected"), (sql, result)
        assert "sekrit" not in str(result.rows)
    _unchanged(db, path, work, rows)
    db.engine.dispose()
    conn = duckdb.connect(str(path), read_only=True)
    try:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM duckdb_tables()").fetchone() == (1,)
    finally:
        conn.close()


def test_user_engine_still_serves_the_user(user_duckdb) -> None:
    db, *_ = user_duckdb
    assert execute_sql(db, "SELECT count(*) FROM t").rows == [(2,)]
    with db.engine.begin() as conn:  # their own writes and settings still work
        conn.exec_driver_sql("INSERT INTO t VALUES (3, 'c')")
    assert execute_sql(db, "SELECT count(*) FROM t").rows == [(3,)]


def test_refused_profiling_never_sticks_to_the_pooled_connection(tmp_path: Path, monkeypatch) -> None:
    """Issue 15: one ``enable_profiling(save_location=...)`` answer broke every later query on the
    pooled connection. Refused before it runs, it cannot."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "own.duckdb"
    conn = duckdb.connect(str(path))
    conn.execute("CREATE TABLE t AS SELECT 1 AS a")
    conn.close()
    digest = sha256(path)
    db = open_database(path)
    monkeypatch.setattr(sql_execute, "check_read_only", lambda sql, dialect="duckdb": None)
    for sql in (
        "SELECT * FROM enable_profiling(format='json', save_location='p.json')",
        "SELECT * FROM enable_logging()",
    ):
        assert execute_sql(db, sql).error_kind == "rejected"
    for _ in range(3):
        result = execute_sql(db, "SELECT a FROM t")
        assert result.ok and result.rows == [(1,)], result.error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["own.duckdb"]
    assert sha256(path) == digest


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT name FROM t WHERE id = 1",
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 5) SELECT sum(n) FROM c",
        "SELECT id FROM t UNION SELECT id FROM t ORDER BY 1",
        "SELECT list_value(1, 2), {'a': 1} AS s, 'x.csv' AS file_name_as_text",
        "SELECT count(*) FROM range(10) r",
    ],
)
def test_ordinary_queries_pass_the_duckdb_parser(user_duckdb, sql: str) -> None:
    db, *_ = user_duckdb
    result = execute_sql(db, sql)
    assert result.ok, (sql, result.error)
