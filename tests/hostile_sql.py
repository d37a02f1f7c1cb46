"""Statements model SQL must never be allowed to run: the SQLer's red-team corpus.

They target the ``hostile_db`` fixture (table ``t`` with index ``ix_t_name``, view ``v_t`` and
trigger-free schema). Files they try to create are relative, so a test that runs them from a
temporary working directory can check that nothing appeared.
"""

from __future__ import annotations

__all__ = ["HOSTILE_SQL"]

HOSTILE_SQL: list[str] = [
    # --- DML, upserts, RETURNING
    "INSERT INTO t VALUES (99, 'x', 1.0)",
    "INSERT INTO t SELECT * FROM t",
    "INSERT INTO t DEFAULT VALUES",
    "INSERT OR REPLACE INTO t VALUES (1, 'x', 0)",
    "REPLACE INTO t VALUES (1, 'x', 0)",
    "INSERT INTO t (id, name) VALUES (1, 'y') ON CONFLICT (id) DO UPDATE SET name = 'pwned'",
    "INSERT INTO t SELECT * FROM t UNION SELECT * FROM t",
    "UPDATE t SET name = 'pwned'",
    "UPDATE OR IGNORE t SET score = 0 WHERE id = 1",
    "UPDATE t SET name = 'x' RETURNING id",
    "DELETE FROM t",
    "DELETE FROM t WHERE id IN (SELECT id FROM t)",
    "DELETE FROM t RETURNING *",
    "dElEtE fRoM t",
    "\tDELETE\nFROM\tt\r\n",
    # --- CTEs wrapping writes
    "WITH x AS (SELECT id FROM t) DELETE FROM t WHERE id IN (SELECT id FROM x)",
    "WITH x AS (SELECT 1) UPDATE t SET score = 0",
    "WITH x AS (SELECT 1) INSERT INTO t SELECT 100, 'n', 0 FROM x",
    "WITH RECURSIVE x(n) AS (SELECT 1) DELETE FROM t",
    "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
    "(DELETE FROM t)",
    # --- DDL: tables, indexes, views, triggers, temp objects, virtual tables
    "DROP TABLE t",
    "DROP TABLE IF EXISTS t",
    "DROP INDEX ix_t_name",
    "DROP VIEW v_t",
    "DROP TRIGGER IF EXISTS tr",
    "ALTER TABLE t ADD COLUMN c INTEGER",
    "ALTER TABLE t RENAME TO t2",
    "ALTER TABLE t RENAME COLUMN name TO n",
    "ALTER TABLE t DROP COLUMN score",
    "CREATE TABLE x (a INTEGER)",
    "CREATE TABLE x AS SELECT * FROM t",
    "CREATE TEMP TABLE x (a)",
    "CREATE TEMPORARY VIEW tv AS SELECT 1",
    "CREATE INDEX ix2 ON t (score)",
    "CREATE UNIQUE INDEX IF NOT EXISTS ix3 ON t (name)",
    "CREATE VIEW v2 AS SELECT * FROM t",
    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM t; END",
    "CREATE VIRTUAL TABLE vt USING fts5(a)",
    "SELECT * INTO t3 FROM t",
    # --- other databases
    "ATTACH DATABASE 'evil_attach.db' AS evil",
    "ATTACH 'evil_attach2.db' AS evil",
    "ATTACH ':memory:' AS m",
    "DETACH DATABASE main",
    # --- PRAGMAs (writes, and reads: no PRAGMA runs at all)
    "PRAGMA journal_mode=DELETE",
    "PRAGMA journal_mode=WAL",
    "PRAGMA user_version=5",
    "PRAGMA query_only=0",
    "PRAGMA query_only = OFF",
    "PRAGMA writable_schema=ON",
    "PRAGMA foreign_keys=OFF",
    "PRAGMA main.application_id = 7",
    "PRAGMA table_info(t)",
    # --- maintenance
    "VACUUM",
    "VACUUM INTO 'evil_vacuum.db'",
    "REINDEX",
    "REINDEX t",
    "ANALYZE",
    "ANALYZE t",
    "EXPLAIN DELETE FROM t",
    "EXPLAIN QUERY PLAN SELECT * FROM t",
    # --- transactions
    "BEGIN",
    "BEGIN IMMEDIATE TRANSACTION",
    "COMMIT",
    "END TRANSACTION",
    "ROLLBACK",
    "SAVEPOINT sp",
    "RELEASE SAVEPOINT sp",
    "BEGIN; DELETE FROM t; COMMIT",
    # --- several statements, some hidden behind comments and strings
    "SELECT 1; DROP TABLE t",
    "SELECT * FROM t; UPDATE t SET name = 'x'",
    "SELECT 1; -- x\nDROP TABLE t",
    "SELECT 1 /* ; */; DELETE FROM t",
    "SELECT 1 -- comment ;\n; DELETE FROM t",
    "SELECT ';'; DELETE FROM t",
    "SELECT 1;;DELETE FROM t",
    "SELECT 1\n;\nDROP TABLE t",
    "SELECT * FROM t UNION ALL SELECT * FROM t; DELETE FROM t",
    "/* SELECT */ DELETE FROM t",
    "-- SELECT\nDELETE FROM t",
    # --- dangerous functions
    "SELECT load_extension('/tmp/evil.so')",
    "SELECT LOAD_EXTENSION('libevil')",
    "SELECT name FROM t WHERE load_extension('x') IS NULL",
    "SELECT writefile('evil_write.txt', 'x')",
    "SELECT * FROM t WHERE id IN (SELECT writefile('evil_write.txt', name) FROM t)",
    "SELECT readfile('/etc/passwd')",
    "SELECT edit('x')",
    "SELECT fts3_tokenizer('simple')",
    "SELECT zeroblob(1000000000)",
    "SELECT length(randomblob(1000000000))",
    "SELECT sqlite_compileoption_get(0)",
    # --- unicode and whitespace tricks
    "SELECT 1;\u00a0DROP TABLE t",
    "SELECT 1;\u3000DELETE FROM t",
    "\ufeffDELETE FROM t",
    "SELECT 1\x00; DROP TABLE t",
    "\x00DELETE FROM t",
    "\u200bDELETE FROM t",
    # --- not a statement at all
    "",
    "   ;  ",
    "-- only a comment",
]
