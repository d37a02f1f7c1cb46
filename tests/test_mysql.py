"""The executor against a live MariaDB, connected as root (issue 14 item 5; the owner's threat model).

Every guarantee is measured on a throwaway server (``mysql_server`` in conftest.py) with two
engines: SQLAlchemy's default (the driver's transactions) and ``isolation_level="AUTOCOMMIT"``.
The MySQL (Oracle) branch of ``route_graph.sql.dialects.mysql.run`` (``max_execution_time``) has no live test.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from pathlib import Path

import pytest
import sqlalchemy

from route_graph import build_route_graph
from route_graph.sql import execute as sql_execute
from route_graph.sql.database import Database
from route_graph.sql.dialects import mysql as mysql_dialect
from route_graph.sql.execute import execute_sql
from route_graph.sql.guard import check_read_only
from route_graph.sql.opening import open_database
from tests.fakes import ScriptedChatModel
from tests.mysql_server import SPIDER_MYSQL_SQL, server_state

ROOT = Path(__file__).resolve().parents[1]
ENGINE_KINDS = ["default", "autocommit"]
DB = "spider"


@pytest.fixture(scope="module")
def my_url(mysql_server) -> str:
    return mysql_server.create_database(DB, SPIDER_MYSQL_SQL)


@pytest.fixture(scope="module", params=ENGINE_KINDS)
def my_db(request, my_url: str) -> Database:
    kwargs = {"isolation_level": "AUTOCOMMIT"} if request.param == "autocommit" else {}
    engine = sqlalchemy.create_engine(my_url, **kwargs)
    yield open_database(engine)
    engine.dispose()


def _files(server) -> list[str]:
    return sorted(p.name for p in server.data.rglob("pwned*")) + sorted(
        p.name for p in Path("/tmp").glob("route_graph_pwned*")
    )


def _lock_holder(server, name: str):
    conn = server.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT IS_USED_LOCK(%s)", (name,))
            return cursor.fetchone()[0]
    finally:
        conn.close()


def test_server_is_live_and_root(my_url: str) -> None:
    db = open_database(my_url)
    assert db.dialect == "mysql"
    assert {"singer", "concert", "t", "v_t"} <= {t.name for t in db.schema.tables}
    result = execute_sql(db, "SELECT name FROM singer WHERE country = 'France' ORDER BY name")
    assert result.ok, result.error
    assert result.rows == [("Justin Brown",), ("Rose White",)]
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT CURRENT_USER()").scalar().startswith("root@")
        assert "MariaDB" in conn.exec_driver_sql("SELECT VERSION()").scalar()
    db.engine.dispose()


# --------------------------------------------------------------------------- the guard + the server

# Writes, DDL, locks, files, server state: what a root connection could do.
HARMFUL = [
    "INSERT INTO t VALUES (99, 'pwned', 0)",
    "REPLACE INTO t VALUES (1, 'pwned', 0)",
    "UPDATE t SET name = 'pwned'",
    "DELETE FROM t",
    "DELETE FROM singer WHERE age > 0",
    "TRUNCATE TABLE t",
    "CREATE TABLE pwned (a INT)",
    "CREATE TABLE pwned2 AS SELECT * FROM t",
    "CREATE TEMPORARY TABLE singer (a INT)",
    "CREATE INDEX ix_pwned ON t (id)",
    "CREATE VIEW v_pwned AS SELECT 1",
    "CREATE DATABASE pwned",
    "CREATE FUNCTION pwned() RETURNS INT RETURN 1",
    "CREATE USER 'pwned'@'%'",
    "GRANT ALL ON *.* TO 'pwned'@'%' IDENTIFIED BY 'x'",
    "DROP TABLE t",
    "DROP VIEW v_t",
    "ALTER TABLE t ADD COLUMN pwned INT",
    "RENAME TABLE t TO t_pwned",
    "SELECT * FROM t FOR UPDATE",
    "SELECT * FROM t LOCK IN SHARE MODE",
    "LOCK TABLES t WRITE",
    "SELECT GET_LOCK('route_graph_lock', 0)",
    "SELECT name FROM t WHERE GET_LOCK('route_graph_lock2', 0) = 1",
    "SELECT LOAD_FILE('/etc/passwd')",
    "SELECT * FROM t INTO OUTFILE 'pwned_outfile.txt'",
    "SELECT name FROM t INTO DUMPFILE '/tmp/route_graph_pwned.txt'",
    "SELECT * INTO OUTFILE 'pwned_into.txt' FROM t",
    "LOAD DATA INFILE '/etc/passwd' INTO TABLE t",
    "SET GLOBAL max_connections = 11",
    "SET SESSION sql_mode = ''",
    "FLUSH PRIVILEGES",
    "DO SLEEP(30)",
    "SELECT SLEEP(30)",
    "SELECT BENCHMARK(1000000000, MD5('x'))",
    "HANDLER t OPEN",
    "XA START 'pwned'",
    "INSTALL SONAME 'ha_blackhole'",
    "ANALYZE TABLE t",
    "KILL CONNECTION_ID()",
    "SHUTDOWN",
    "SELECT 1; DELETE FROM t",
    "WITH d AS (SELECT 1) DELETE FROM t",
]
# What root could still do with the SQL check off: the server's read-only transaction does not
# cover files, global settings or user locks (the privilege warning and docs say so).
GUARD_ONLY = (
    "LOAD_FILE", "OUTFILE", "DUMPFILE", "SET GLOBAL", "FLUSH", "KILL", "SHUTDOWN", "INSTALL",
)


def test_harmful_statements_are_refused_and_nothing_changes(my_db: Database, mysql_server) -> None:
    before = server_state(my_db.engine, DB)
    for sql in HARMFUL:
        assert check_read_only(sql, "mysql"), f"the guard allowed {sql!r}"
        result = execute_sql(my_db, sql, timeout_s=5)
        assert (result.ok, result.error_kind) == (False, "rejected"), (sql, result)
    assert server_state(my_db.engine, DB) == before
    assert _files(mysql_server) == []
    assert _lock_holder(mysql_server, "route_graph_lock") is None


def test_the_server_alone_refuses_writes_with_the_guard_off(
    my_db: Database, mysql_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine-level half: a read-only transaction in a read-only session (DDL's implicit commit
    cannot escape it), rolled back, user locks released. Nothing changes and nothing stays locked
    when every statement but the guard-only ones reaches the server."""
    monkeypatch.setattr(sql_execute, "check_read_only", lambda sql, dialect="mysql": None)
    before = server_state(my_db.engine, DB)
    outcomes = {}
    for sql in HARMFUL:
        if any(word in sql for word in GUARD_ONLY):
            continue
        result = execute_sql(my_db, sql, timeout_s=2)
        outcomes[sql] = result.error_kind if not result.ok else "ran"
        assert result.error_kind != "timeout" or "SLEEP" in sql or "BENCHMARK" in sql, (sql, result)
    refused_by_server = [sql for sql, kind in outcomes.items() if kind == "rejected"]
    assert "DELETE FROM t" in refused_by_server and "DROP TABLE t" in refused_by_server
    assert "CREATE TEMPORARY TABLE singer (a INT)" in refused_by_server
    assert "GRANT ALL ON *.* TO 'pwned'@'%' IDENTIFIED BY 'x'" in refused_by_server
    assert "SELECT * FROM t FOR UPDATE" in refused_by_server
    ran = {sql for sql, kind in outcomes.items() if kind == "ran"}
    assert ran <= {  # reads, a user lock released after the query, index statistics
        "ANALYZE TABLE t", "SELECT * FROM t LOCK IN SHARE MODE", "SELECT GET_LOCK('route_graph_lock', 0)",
        "SELECT name FROM t WHERE GET_LOCK('route_graph_lock2', 0) = 1",
    }, outcomes
    assert server_state(my_db.engine, DB) == before
    assert _files(mysql_server) == []
    assert _lock_holder(mysql_server, "route_graph_lock") is None  # released after the query
    assert _lock_holder(mysql_server, "route_graph_lock2") is None
    after = execute_sql(my_db, "SELECT count(*) FROM t")  # the pooled connections still work
    assert after.ok and after.rows == [(3,)]


# --------------------------------------------------------------------------- timeouts


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM big a, big b, big c",
        "SELECT max(a.n + b.n * c.n) FROM big a JOIN big b JOIN big c",
    ],
)
def test_runaway_queries_stop_at_the_timeout(my_db: Database, sql: str) -> None:
    start = time.monotonic()
    result = execute_sql(my_db, sql, timeout_s=1.5)
    assert (result.ok, result.error_kind) == (False, "timeout"), result
    assert time.monotonic() - start < 20  # it returned (27e9 rows would take hours)
    again = execute_sql(my_db, "SELECT count(*) FROM t")
    assert again.ok and again.rows == [(3,)]


def test_sleep_is_refused_and_stopped_by_the_server_without_the_guard(my_db: Database, monkeypatch) -> None:
    assert execute_sql(my_db, "SELECT SLEEP(30)").error_kind == "rejected"
    monkeypatch.setattr(sql_execute, "check_read_only", lambda sql, dialect="mysql": None)
    result = execute_sql(my_db, "SELECT SLEEP(30)", timeout_s=1)
    assert result.error_kind == "timeout", result
    assert result.elapsed_s < 20


def test_the_client_kills_when_the_server_does_not(my_db: Database, monkeypatch) -> None:
    """``KILL QUERY`` from a second connection backs up the server's limit: with no server limit
    at all (as on MySQL before 5.7.8), it alone stops a 30 s sleep at the timeout."""
    real = mysql_dialect._my_session
    monkeypatch.setattr(
        mysql_dialect, "_my_session", lambda cursor, info: dataclasses.replace(real(cursor, info), limit_var=None)
    )
    monkeypatch.setattr(sql_execute, "check_read_only", lambda sql, dialect="mysql": None)
    result = execute_sql(my_db, "SELECT SLEEP(30)", timeout_s=1)
    assert (result.ok, result.error_kind) == (False, "timeout"), result
    assert result.elapsed_s < 20
    assert execute_sql(my_db, "SELECT count(*) FROM t").rows == [(3,)]


def test_a_cut_result_is_stopped_not_drained(my_db: Database) -> None:
    """Rows stream from an unbuffered cursor; at ``max_rows`` the rest (27 billion rows here) is
    killed on the server instead of being read to the end (which would run into the timeout)."""
    sql = "SELECT a.n, b.n, c.n FROM big a, big b, big c"
    result = execute_sql(my_db, sql, timeout_s=20, max_rows=1000)
    assert result.ok and result.truncated and result.row_count == 1000, result.error
    assert result.elapsed_s < 15
    assert execute_sql(my_db, "SELECT count(*) FROM t").rows == [(3,)]


def test_session_settings_are_restored(my_url: str) -> None:
    """The executor's transaction and limits are its own: the user's engine works as before."""
    for kwargs, autocommit in (({}, False), ({"isolation_level": "AUTOCOMMIT"}, True)):
        engine = sqlalchemy.create_engine(my_url, pool_size=1, max_overflow=0, **kwargs)
        db = Database(engine)
        assert execute_sql(db, "SELECT count(*) FROM t").ok
        assert execute_sql(db, "SELECT count(*) FROM big a, big b, big c", timeout_s=1).error_kind == "timeout"
        assert execute_sql(db, "SELECT count(*) FROM t, t AS u").rows == [(9,)]
        with engine.connect() as conn:
            assert conn.connection.driver_connection.get_autocommit() is autocommit
            assert conn.exec_driver_sql("SELECT @@SESSION.tx_read_only, @@SESSION.max_statement_time").one() == (0, 0)
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS user_table (a INT)")  # the user may write
            conn.exec_driver_sql("DROP TABLE user_table")
        engine.dispose()


def test_concurrent_queries_share_the_pool(my_db: Database) -> None:
    from concurrent.futures import ThreadPoolExecutor

    sql = "SELECT count(*) FROM big a, stadium b"
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: execute_sql(my_db, sql, timeout_s=60), range(40)))
    assert [r.error for r in results if not r.ok] == []
    assert all(r.rows == [(6000,)] for r in results)


# --------------------------------------------------------------------------- who connects


def _user_block() -> str:
    text = (ROOT / "docs" / "databases.md").read_text()
    match = re.search(r"<!-- read-only-mysql-user[^>]*-->\s*```sql\n(.*?)```", text, re.DOTALL)
    assert match, "docs/databases.md lost its MySQL read-only user block"
    return match.group(1)


def test_root_is_warned_once_and_the_documented_user_is_not(
    mysql_server, my_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = sqlalchemy.create_engine(my_url)
    db = Database(engine)
    with caplog.at_level(logging.WARNING, logger="route_graph"):
        for _ in range(3):
            assert execute_sql(db, "SELECT count(*) FROM singer").ok
    warnings = [r.getMessage() for r in caplog.records if "MySQL/MariaDB" in r.getMessage()]
    assert len(warnings) == 1 and "SELECT privileges only" in warnings[0], warnings
    engine.dispose()
    conn = mysql_server.connect()
    try:
        with conn.cursor() as cursor:
            for statement in filter(str.strip, _user_block().replace("shop", DB).split(";")):
                cursor.execute(statement)
    finally:
        conn.close()
    reader = sqlalchemy.create_engine(
        my_url.replace("root@", "route_reader:change-me@")
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="route_graph"):
        db = open_database(reader)
        result = execute_sql(db, "SELECT name FROM singer WHERE age > 40 ORDER BY name")
        assert result.rows == [("Joe Sharp",), ("Rose White",)], result.error
        timed = execute_sql(db, "SELECT count(*) FROM big a, big b, big c", timeout_s=1)
        assert timed.error_kind == "timeout", timed
    assert [r.getMessage() for r in caplog.records] == []
    reader.dispose()


# --------------------------------------------------------------------------- the graph


def fence(sql: str) -> str:
    return f"```sql\n{sql}\n```"


def test_graph_answers_a_question_end_to_end(my_url: str) -> None:
    sql = "SELECT name FROM singer WHERE country = 'France'"
    llm = ScriptedChatModel(
        scripts={
            "sl": ['{"singer": ["name", "country"]}'],
            "ts": [fence("SELECT name FROM singer"), fence(sql)],
        }
    )
    graph = build_route_graph(llm, my_url, include_tables=["singer", "concert", "singer_in_concert"])
    out = graph.invoke({"question": "Which singers are from France?"})
    assert all(not lines for lines in llm.scripts.values()), llm.scripts
    assert out["sql"] == sql
    assert out["result"]["ok"], out["result"]
    assert sorted(r[0] for r in out["result"]["rows"]) == ["Justin Brown", "Rose White"]
    prompts = "\n".join(prompt for _, prompt in llm.calls)
    assert "CREATE TABLE singer (" in prompts and "CREATE TABLE stadium" not in prompts
