"""SQLer: run model-written SQL read-only, time-limited and row-capped, and describe the result.

Model SQL is untrusted. Two independent guards stand between it and the database:

1. ``check_read_only`` parses the statement with sqlglot and allows exactly one SELECT (or set
   operation / WITH ... SELECT) that contains no DML, DDL, command or denied function. Function
   names are matched as the database resolves them, on the tree and on the tokens, by name and
   by family (``is_denied_function``); Unicode-escaped identifiers are refused outright.
2. The connection or server refuses what slips through. SQLite: the file is opened ``mode=ro``
   with ``PRAGMA query_only=ON`` (see ``database.open_database``), and every execution installs
   an authorizer that allows only SELECT/READ/FUNCTION/RECURSIVE, limits ATTACH to zero
   databases and caps value sizes; a progress handler enforces the deadline. DuckDB: read-only
   files without external access when we open them; on any DuckDB engine (a user's read-write
   one included) the statement is checked again on DuckDB's own parse, runs in a transaction
   that is always rolled back, and is interrupted at the deadline. PostgreSQL: an explicit
   ``READ ONLY`` transaction opened here whatever the engine's isolation level, local statement
   and lock timeouts, a superuser's queries run as ``pg_read_all_data``, always rolled back
   (``_run_postgres``), rows streamed from a server-side cursor (psycopg 3). MySQL/MariaDB:
   a ``READ ONLY`` transaction in a session made read-only for its duration (DDL's implicit
   commit cannot escape it), the server's statement time limit plus ``KILL QUERY``, always rolled
   back, user locks released (``_run_mysql``). Other engines: a transaction that is always rolled
   back, no timeout that interrupts the server.

Bad SQL never raises: rejections, errors and timeouts come back as an ``ExecutionResult`` with
``ok=False``, which is exactly the feedback the noise-correction prompt needs.

The timeout covers the wait for a pooled connection too: under load, a query that cannot get a
connection before its deadline fails as a timeout instead of running late. DuckDB connections
never print a progress bar (it would corrupt ``route-sql ask --json`` on stdout).

This module needs only an engine and a dialect (``SqlTarget``), so it never imports the database
layer, which builds on it.

Work on untrusted SQL is bounded before the database sees it: ``sql_bounds`` caps its length and
nesting before sqlglot parses it, and every scan of the raw text is linear. Results are bounded in
bytes as well as rows: rows are fetched one at a time, a longer string/blob cell keeps only its
first ``MAX_CELL_CHARS`` characters/bytes (``ExecutionResult.cells_truncated`` counts them), and
fetching stops once ``MAX_RESULT_CHARS`` are held (``truncated``, as when ``max_rows`` is hit).
``ExecutionResult.to_dict`` is JSON- and msgpack-safe (LangGraph checkpoints, Studio, orjson).
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

import sqlalchemy
import sqlglot
from sqlalchemy.pool import QueuePool, SingletonThreadPool
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from route_graph.sql_bounds import check_sql_bounds, utf8_safe

__all__ = [
    "DENIED_FUNCTIONS",
    "DENIED_FUNCTION_PREFIXES",
    "DENIED_FUNCTION_SUFFIXES",
    "MAX_CELL_CHARS",
    "MAX_RESULT_CHARS",
    "ErrorKind",
    "ExecutionResult",
    "SqlTarget",
    "bound_connect_timeout",
    "check_read_only",
    "execute_sql",
    "format_value",
    "is_denied_function",
    "quiet_duckdb",
    "summarize_result",
]

ErrorKind = Literal["rejected", "timeout", "error"]

#: Functions no query may call (any dialect, lower case): file/extension access, sleeps and
#: locks, sequence writes, arbitrary-SQL evaluators, and blob generators that exhaust memory.
#: Matched on the name as the database resolves it (quotes and case do not matter; Unicode-escaped
#: identifiers are refused outright) and together with ``DENIED_FUNCTION_PREFIXES``.
DENIED_FUNCTIONS: frozenset[str] = frozenset(
    {
        # SQLite (core and CLI extensions)
        "load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "zeroblob",
        "randomblob", "sqlite_compileoption_get", "sqlite_compileoption_used",
        # PostgreSQL: server files, other connections, signals, configuration, notifications,
        # sequences, SQL-string evaluators (they would run text the guard never saw), WAL/backup
        # control and superuser-only catalog writes.
        "pg_stat_file", "pg_current_logfile", "pg_notify", "pg_terminate_backend",
        "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile", "set_config", "nextval",
        "setval", "loread", "lowrite", "pg_drop_replication_slot", "pg_promote", "pg_nextoid",
        "pg_log_backend_memory_contexts", "pg_import_system_collations", "pg_show_all_file_settings",
        "pg_hba_file_rules", "pg_ident_file_mappings", "ts_stat", "crosstab", "crosstab2",
        "crosstab3", "crosstab4", "connectby", "xpath_table", "pg_logdir_ls", "pg_start_backup",
        "pg_stop_backup", "pg_export_snapshot", "pg_stat_statements_reset", "pg_prewarm",
        "pg_truncate_visibility_map",
        # MySQL
        "sleep", "benchmark", "load_file", "get_lock", "release_lock", "release_all_locks",
        "is_free_lock", "is_used_lock", "master_pos_wait", "source_pos_wait",
        # DuckDB (files, other databases, environment, SQL strings, profiling/logging to files)
        "read_csv", "read_csv_auto", "read_parquet", "parquet_scan", "read_json",
        "read_json_auto", "read_json_objects", "read_ndjson", "read_ndjson_auto",
        "read_ndjson_objects", "read_text", "read_blob", "read_xlsx", "glob", "sqlite_scan",
        "sqlite_attach", "postgres_scan", "postgres_attach", "mysql_scan", "iceberg_scan",
        "delta_scan", "st_read", "query", "query_table", "getenv", "json_execute_serialized_sql",
        "checkpoint", "force_checkpoint", "write_log", "truncate_duckdb_logs", "which_secret",
        "duckdb_secrets", "duckdb_logs", "duckdb_logs_parsed", "add_grammar_extension",
        "remove_grammar_extension", "copy_database", "import_database", "sleep_ms", "sniff_csv",
        "arrow_scan", "arrow_scan_dumb", "python_arrow_scan", "pandas_scan", "install_extension",
    }
)

#: Whole families refused by name prefix: allow by default, but where a family touches files,
#: other connections or server state, every present *and future* member is refused (a new
#: ``pg_ls_*`` or ``read_*`` reader must not need a new entry here). Lower case.
DENIED_FUNCTION_PREFIXES: tuple[str, ...] = (
    # PostgreSQL
    "pg_read_",  # pg_read_file, pg_read_binary_file: server files
    "pg_ls_",  # pg_ls_dir, pg_ls_logdir, pg_ls_waldir, pg_ls_tmpdir, ...: server directories
    "pg_file_",  # adminpack: pg_file_write/rename/unlink/sync
    "pg_sleep",  # pg_sleep, pg_sleep_for, pg_sleep_until (the timeout bounds them; no use anyway)
    "dblink",  # dblink, dblink_connect(_u), dblink_exec, dblink_send_query: outside our transaction
    "lo_",  # large objects: lo_create, lo_from_bytea, lo_import, lo_export, lo_put, lo_unlink, ...
    "pg_advisory", "pg_try_advisory",  # session locks survive the rollback on a pooled connection
    "pg_create_",  # replication slots, restore points
    "pg_copy_",  # pg_copy_*_replication_slot
    "pg_replication_",  # replication origins
    "pg_logical_",  # pg_logical_emit_message, pg_logical_slot_get_changes (consumes changes)
    "pg_stat_reset",  # statistics resets
    "pg_switch_", "pg_wal_replay_", "pg_backup_",  # WAL and backup control
    "query_to_xml", "cursor_to_xml", "table_to_xml", "schema_to_xml", "database_to_xml",
    # DuckDB
    "read_",  # read_csv/json/parquet/text/blob/duckdb, read_single_*_file, ...: files
    "parquet_",  # parquet_scan/metadata/schema/...: files
    "enable_", "disable_",  # enable_profiling(save_location=...), enable_logging(storage='file')
    "iceberg_", "delta_",  # lakehouse readers
)
#: Families refused by name suffix: table functions that scan other databases or files.
DENIED_FUNCTION_SUFFIXES: tuple[str, ...] = ("_scan", "_attach")


def is_denied_function(name: str) -> bool:
    """True when no query may call the function ``name`` (any case, any quoting)."""
    lowered = name.lower()
    return (
        lowered in DENIED_FUNCTIONS
        or lowered.startswith(DENIED_FUNCTION_PREFIXES)
        or lowered.endswith(DENIED_FUNCTION_SUFFIXES)
    )


# Nodes that make a statement something other than a read-only query, wherever they appear.
_FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = tuple(
    cls
    for cls in (
        getattr(exp, name, None)
        for name in (
            "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "AlterColumn",
            "TruncateTable", "Command", "Pragma", "Attach", "Detach", "Transaction", "Commit",
            "Rollback", "Set", "Copy", "Use", "Analyze", "Into", "LoadData", "Refresh", "Cache",
            "Uncache", "Grant", "Revoke", "Kill", "Export", "Install", "Lock", "Put", "Get",
            "Comment", "Describe", "Show", "Summarize",
        )
    )
    if isinstance(cls, type)
)

_QUERY_ROOTS: tuple[type[exp.Expression], ...] = (exp.Select, getattr(exp, "SetOperation", exp.Union))
_SEMICOLON = getattr(exp, "Semicolon", type(None))  # a statement separator holding comments
_MAX_ERROR_CHARS = 500
_SUMMARY_MAX_COLUMNS = 20
_SQLITE_MAX_VALUE_BYTES = 32 * 1024 * 1024
_DUCKDB_FILE_SUFFIX = re.compile(
    r"\.(csv|tsv|txt|parquet|json|jsonl|ndjson|xlsx|gz|zst|db|sqlite|duckdb)$", re.IGNORECASE
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_WORD = re.compile(r"[A-Za-z_]+")

#: A longer string (characters) or blob (bytes) in a result keeps only this much: result cells
#: feed prompts (which show 60 characters) and graph state, never megabytes.
MAX_CELL_CHARS = 10_000
#: Fetching stops once the cells held total more than this many characters/bytes (about 10 bytes
#: per number); with ``max_rows`` it bounds a result's memory, however wide its values.
MAX_RESULT_CHARS = 20_000_000
_MAX_CELL_ITEMS = 1_000  # list/struct values (DuckDB) keep at most this many items
_NUMBER_SIZE = 10
# msgpack (LangGraph checkpoints) and orjson hold 64-bit integers; larger ones become text.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class SqlTarget(Protocol):
    """What ``execute_sql`` needs of a database: its engine and its sqlglot dialect.

    ``database.Database`` is one; anything with these two attributes will do, which keeps this
    module free of the database layer (that layer imports it, not the other way round).
    """

    @property
    def engine(self) -> sqlalchemy.Engine: ...

    @property
    def dialect(self) -> str: ...


@dataclass
class ExecutionResult:
    """What one execution did: the rows (at most ``max_rows``) or why there are none."""

    sql: str
    ok: bool
    columns: list[str] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    row_count: int = 0  # rows fetched (<= max_rows)
    truncated: bool = False  # the query had more rows than were fetched (max_rows or MAX_RESULT_CHARS)
    cells_truncated: int = 0  # cells cut to MAX_CELL_CHARS characters/bytes (or _MAX_CELL_ITEMS items)
    error: str | None = None
    error_kind: ErrorKind | None = None
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: what LangGraph's checkpointers and orjson can store.

        Rows become lists; bytes hex text, dates ISO text, Decimals floats; NaN/inf, integers
        beyond 64 bits and unknown types text; lone surrogates in text are replaced.
        """
        return {
            "sql": utf8_safe(self.sql),
            "ok": self.ok,
            "columns": [utf8_safe(str(c)) for c in self.columns],
            "rows": [[_json_value(v) for v in row] for row in self.rows],
            "row_count": self.row_count,
            "truncated": self.truncated,
            "cells_truncated": self.cells_truncated,
            "error": None if self.error is None else utf8_safe(self.error),
            "error_kind": self.error_kind,
            "elapsed_s": self.elapsed_s,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExecutionResult:
        """Inverse of ``to_dict`` (values keep their JSON types; rows become tuples)."""
        rows = [tuple(r) for r in d.get("rows", ())]
        return cls(
            sql=d["sql"],
            ok=bool(d["ok"]),
            columns=list(d.get("columns", ())),
            rows=rows,
            row_count=int(d.get("row_count", len(rows))),
            truncated=bool(d.get("truncated", False)),
            cells_truncated=int(d.get("cells_truncated", 0)),
            error=d.get("error"),
            error_kind=d.get("error_kind"),
            elapsed_s=float(d.get("elapsed_s", 0.0)),
        )


# --------------------------------------------------------------------------- static check


class _QuietSqlglot(logging.Filter):
    """Drops sqlglot's "falling back to Command" warnings while *we* parse untrusted SQL."""

    local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "active", False)


_QUIET = _QuietSqlglot()
logging.getLogger("sqlglot").addFilter(_QUIET)


def _parse(sql: str, dialect: str) -> list[exp.Expression | None]:
    _QUIET.local.active = True
    try:
        return sqlglot.parse(sql, read=dialect)
    finally:
        _QUIET.local.active = False


def _strip_sql(sql: str) -> str:
    """Whitespace and trailing semicolons off (models often end SQL with ';'); linear time."""
    text = sql.strip()
    end = len(text)
    while end and (text[end - 1] == ";" or text[end - 1].isspace()):
        end -= 1
    return text[:end]


def _first_word(sql: str) -> str:
    """The statement's first keyword (for messages), after whitespace and comments; linear time."""
    i, n = 0, len(sql)
    while i < n:
        if sql[i].isspace():
            i += 1
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = n if newline == -1 else newline + 1
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            i = n if close == -1 else close + 2
        else:
            break
    match = _WORD.match(sql, i)
    return match.group(0).upper() if match else (sql[i : i + 1] or "empty")


def _short(message: str, limit: int = _MAX_ERROR_CHARS) -> str:
    text = _ANSI.sub("", message).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    return node.sql_name().lower()


def _describe_node(node: exp.Expression) -> str:
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    if isinstance(node, exp.Into):
        return "SELECT ... INTO"
    if isinstance(node, exp.Lock):
        return "FOR UPDATE/SHARE lock"
    return node.key.upper()


def _tokenizes_as_single_query(sql: str, dialect: str) -> bool:
    """True when sqlglot's tokenizer sees one statement that starts with SELECT or WITH."""
    try:
        tokens = sqlglot.Dialect.get_or_raise(dialect).tokenize(sql)
    except SqlglotError:
        return False
    if not tokens or tokens[0].token_type not in (TokenType.SELECT, TokenType.WITH):
        return False
    return not any(t.token_type == TokenType.SEMICOLON for t in tokens)


# Literal tokens: a word in one of these is data, never a function name.
_LITERAL_TOKENS = frozenset(
    getattr(TokenType, name)
    for name in ("STRING", "NATIONAL_STRING", "RAW_STRING", "BYTE_STRING", "HEX_STRING", "BIT_STRING",
                 "UNICODE_STRING", "HEREDOC_STRING", "NUMBER")
    if hasattr(TokenType, name)
)


def _check_tokens(text: str, dialect: str) -> str | None:
    """The token half of the guard, independent of how sqlglot builds its tree.

    Refuses a Unicode-escaped identifier (PostgreSQL ``U&"pg_read_\\0066ile"`` names
    ``pg_read_file`` in a spelling no name list matches; no real query needs one) and any denied
    function name directly followed by ``(``, whatever node sqlglot would have made of it. A
    tokenizer error is left to the parser, which rejects it.
    """
    try:
        tokens = sqlglot.Dialect.get_or_raise(dialect).tokenize(text)
    except SqlglotError:
        return None
    for i, token in enumerate(tokens[:-1]):
        following = tokens[i + 1]
        if (
            token.token_type == TokenType.VAR
            and token.text.upper() == "U"
            and following.token_type == TokenType.AMP
            and text[token.end + 1 : token.end + 2] == "&"
            and text[following.end + 1 : following.end + 2] == '"'
        ):
            return (
                'Unicode-escaped identifiers (U&"...") are not allowed; write names plainly, '
                'e.g. "pg_class" instead of U&"pg_\\0063lass".'
            )
        if (
            following.token_type == TokenType.L_PAREN
            and token.token_type not in _LITERAL_TOKENS
            and is_denied_function(token.text)
        ):  # keyword tokens too: sqlglot tokenizes some function names (GLOB, ...) as keywords
            return f"The function {token.text.lower()}() is not allowed in queries."
    return None


def check_read_only(sql: str, dialect: str = "sqlite") -> str | None:
    """Return None when ``sql`` is one read-only query, else a reason a person (or model) can act on.

    SQL over ``sql_bounds``' length or nesting limits is refused before it is parsed.
    sqlglot occasionally cannot parse SQL that SQLite accepts. For ``dialect="sqlite"`` only, a
    statement that sqlglot cannot parse but that tokenizes as a single statement starting with
    SELECT or WITH is allowed: ``execute_sql`` runs SQLite under an authorizer on a read-only
    connection, which is the final judge there. For every other dialect a parse error rejects.
    """
    bounds = check_sql_bounds(sql)
    if bounds is not None:
        return bounds
    text = _strip_sql(sql)
    if not text:
        return "Empty SQL: there is no statement to execute."
    if "\x00" in text:
        return "The SQL contains a NUL character; only a single plain SELECT query may run."
    reason = _check_tokens(text, dialect)
    if reason is not None:
        return reason
    try:
        parsed = _parse(text, dialect)
    except (SqlglotError, RecursionError) as exc:
        if dialect == "sqlite" and _tokenizes_as_single_query(text, dialect):
            return None
        first = _short(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 200)
        return f"Cannot parse the SQL: {first}"
    try:
        return _check_tree(parsed, text, dialect)
    except RecursionError:  # nesting without parentheses (NOT NOT ..., nested CASE)
        return "The SQL is nested too deeply to check; write a flatter query."


def _check_tree(parsed: list[exp.Expression | None], text: str, dialect: str) -> str | None:
    """The tree half of ``check_read_only``: one query root, no forbidden node or function."""
    statements = [s for s in parsed if s is not None and not isinstance(s, _SEMICOLON)]
    if not statements:
        return "Empty SQL: there is no statement to execute (only comments?)."
    if len(statements) > 1:
        return (
            f"Found {len(statements)} statements; only a single read-only SELECT query may run "
            "(remove everything after the first ';')."
        )
    root = statements[0]
    while isinstance(root, exp.Subquery) and isinstance(root.this, exp.Expression):
        root = root.this
    if not isinstance(root, _QUERY_ROOTS):
        kind = _describe_node(root) if isinstance(root, _FORBIDDEN_NODES) else _first_word(text)
        article = "an" if kind[:1] in "AEIOU" else "a"
        return f"Only a read-only SELECT query may run; this is {article} {kind} statement."
    for node in root.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            return (
                f"The query contains {_describe_node(node)}, which is not allowed; "
                "only read-only SELECT queries may run."
            )
        if isinstance(node, exp.Func) and is_denied_function(_function_name(node)):
            return f"The function {_function_name(node)}() is not allowed in queries."
        if isinstance(node, exp.Table):  # DuckDB reads such "tables" from files; no real table is named so
            name = node.name
            if any(ch in name for ch in "/\\:") or _DUCKDB_FILE_SUFFIX.search(name):
                return f"Reading files ({name!r}) is not allowed; query the database's tables."
    return None


# --------------------------------------------------------------------------- execution


class _Rejected(Exception):
    """The connection-level guard refused the statement."""


class _Timeout(Exception):
    """The deadline passed and the query was interrupted."""


class _NoConnection(_Timeout):
    """The deadline passed while waiting for a pooled connection: the query never ran."""


_QUIET_KEY = "route_graph.quiet_duckdb"  # in a pooled connection's info: progress bar is off


def quiet_duckdb(dbapi_connection: Any, info: dict[Any, Any] | None = None) -> None:
    """Switch off DuckDB's progress bar on one connection: it prints to stdout on queries over
    ~2 s, which corrupts JSON output. Both settings are per connection (DuckDB refuses them as
    ``connect(config=...)`` options), so every connection needs this; ``info`` (a pooled
    connection's) remembers that it was done."""
    if info is not None and info.get(_QUIET_KEY):
        return
    dbapi_connection.execute("SET enable_progress_bar = false")
    dbapi_connection.execute("SET enable_progress_bar_print = false")
    if info is not None:
        info[_QUIET_KEY] = True


def _close_late(future: Future) -> None:
    if not future.cancelled() and future.exception() is None and future.result() is not None:
        future.result().close()


def _checkout_threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=64, thread_name_prefix="route-graph-checkout")


#: Threads that wait on a QueuePool for callers (see ``_checkout``); idle ones are reused (a new
#: thread per query would cost about 0.5 ms). At exit, one still waiting for a connection that
#: someone holds delays exit by up to the pool's own timeout.
_CHECKOUTS = _checkout_threads()


def _new_checkout_threads_after_fork() -> None:
    global _CHECKOUTS
    _CHECKOUTS = _checkout_threads()  # a forked child has none of the parent's threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_checkout_threads_after_fork)


def _checkout(engine: sqlalchemy.Engine, deadline: float) -> Any:
    """A pooled DB-API connection, or ``_NoConnection`` if none is free before ``deadline``.

    Only a ``QueuePool`` makes callers wait for a connection, and it waits its own ``timeout``
    (30 s by default), not the query's. SQLAlchemy has no per-call timeout, so a helper thread
    checks out while this one waits until the deadline (a reused thread: microseconds); a connection
    that arrives after the caller gave up goes straight back to the pool. Server databases are
    checked out the same way whatever their pool: opening a connection to a server that accepts
    TCP and never answers would otherwise hang the caller. SQLite/DuckDB engines with other pools
    (SingletonThreadPool's per-thread connections, NullPool, StaticPool) never wait for another
    query and are checked out here, in the caller's thread, as before.
    """
    server = engine.dialect.name not in ("sqlite", "duckdb")
    if not isinstance(engine.pool, QueuePool) and not (server and not isinstance(engine.pool, SingletonThreadPool)):
        return engine.raw_connection()
    lock = threading.Lock()
    state = {"abandoned": False}

    def take() -> Any:
        pooled = engine.raw_connection()
        with lock:
            if not state["abandoned"]:
                return pooled
        pooled.close()  # the caller timed out meanwhile
        return None

    future = _CHECKOUTS.submit(take)
    try:
        pooled = future.result(timeout=max(0.0, deadline - time.monotonic()))
    except FutureTimeout:
        with lock:
            state["abandoned"] = True
        if not future.cancel():  # running: a connection taken before the flag was set goes back
            future.add_done_callback(_close_late)
        raise _NoConnection from None
    if time.monotonic() >= deadline:
        pooled.close()
        raise _Timeout
    return pooled


def _pool_is_full(engine: sqlalchemy.Engine) -> bool:
    """True when every connection a QueuePool may open is checked out (busy, not unreachable)."""
    pool = engine.pool
    if not isinstance(pool, QueuePool):
        return False
    overflow = pool._max_overflow  # no public accessor; -1 means unlimited
    return overflow >= 0 and pool.checkedout() >= pool.size() + overflow


_AUTH_ACTIONS = {
    getattr(sqlite3, f"SQLITE_{name}"): name
    for name in ["CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE", "CREATE_TEMP_TRIGGER", "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE", "DROP_INDEX", "DROP_TABLE", "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER", "DROP_TEMP_VIEW", "DROP_TRIGGER", "DROP_VIEW", "INSERT", "PRAGMA", "READ", "SELECT", "TRANSACTION", "UPDATE", "ATTACH", "DETACH", "ALTER_TABLE", "REINDEX", "ANALYZE", "CREATE_VTABLE", "DROP_VTABLE", "FUNCTION", "SAVEPOINT", "RECURSIVE"]
    if hasattr(sqlite3, f"SQLITE_{name}")
}
_AUTH_ALLOWED = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
_SQLITE_REFUSALS = (
    "not authorized",
    "authorization denied",
    "readonly database",
    "one statement at a time",
    "null character",
)


@dataclass
class _Fetched:
    """What ``_fetch`` read: at most ``max_rows`` capped rows, and whether the query had more."""

    columns: list[str]
    rows: list[tuple]
    more: bool
    cells_truncated: int


def _cap_cell(value: Any) -> tuple[Any, int, int]:
    """(value cut to MAX_CELL_CHARS characters/bytes or _MAX_CELL_ITEMS items, cells cut, size)."""
    if isinstance(value, str):
        if len(value) > MAX_CELL_CHARS:
            return value[:MAX_CELL_CHARS], 1, MAX_CELL_CHARS
        return value, 0, len(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) > MAX_CELL_CHARS:
            return bytes(value[:MAX_CELL_CHARS]), 1, MAX_CELL_CHARS
        return bytes(value), 0, len(value)
    if isinstance(value, dict):  # DuckDB STRUCT/MAP values
        pairs = [(key, _cap_cell(item)) for key, item in list(value.items())[:_MAX_CELL_ITEMS]]
        cut = int(len(value) > _MAX_CELL_ITEMS) + sum(c for _, (_, c, _) in pairs)
        return {key: v for key, (v, _, _) in pairs}, cut, sum(n for _, (_, _, n) in pairs)
    if isinstance(value, (list, tuple)):  # DuckDB LIST/ARRAY values
        items = [_cap_cell(item) for item in value[:_MAX_CELL_ITEMS]]
        cut = int(len(value) > _MAX_CELL_ITEMS) + sum(c for _, c, _ in items)
        capped = [v for v, _, _ in items]
        return (tuple(capped) if isinstance(value, tuple) else capped), cut, sum(n for _, _, n in items)
    return value, 0, _NUMBER_SIZE


def _fetch(cursor: Any, max_rows: int) -> _Fetched:
    """Rows one at a time, each cell capped, until ``max_rows`` or ``MAX_RESULT_CHARS`` is reached.

    One row at a time so that no more than one uncapped row is ever held (a SQLite value can be
    32 MB); DB-API ``fetchone`` costs about a microsecond a row on SQLite and DuckDB.
    """
    if cursor.description is None:  # a no-op statement that slipped past every other guard
        raise _Rejected("The statement is not a query (it returns no rows); only SELECT queries may run.")
    columns = [_cap_cell(str(d[0]))[0] for d in cursor.description]
    rows: list[tuple] = []
    held = cut = 0
    while True:
        raw = cursor.fetchone()
        if raw is None:
            return _Fetched(columns, rows, False, cut)
        if len(rows) >= max_rows or held > MAX_RESULT_CHARS:
            return _Fetched(columns, rows, True, cut)
        row = []
        for value in raw:
            capped, cells_cut, size = _cap_cell(value)
            row.append(capped)
            cut, held = cut + cells_cut, held + size
        rows.append(tuple(row))


def _lenient_text(data: bytes) -> str:
    # Some Spider/BIRD databases hold text that is not valid UTF-8.
    return data.decode("utf-8", errors="replace")


def _run_sqlite(engine: sqlalchemy.Engine, sql: str, deadline: float, max_rows: int) -> _Fetched:
    pooled = _checkout(engine, deadline)
    try:
        conn: sqlite3.Connection = pooled.driver_connection  # type: ignore[assignment]
        denied: list[str] = []
        timed_out = False

        def authorize(action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
            if action in _AUTH_ALLOWED:
                if action == sqlite3.SQLITE_FUNCTION and is_denied_function(arg2 or ""):
                    denied.append(f"the function {arg2}()")
                    return sqlite3.SQLITE_DENY
                return sqlite3.SQLITE_OK
            target = " ".join(str(a) for a in (arg1, arg2) if a)
            denied.append(_AUTH_ACTIONS.get(action, f"action {action}") + (f" ({target})" if target else ""))
            return sqlite3.SQLITE_DENY

        def progress() -> int:
            nonlocal timed_out
            if time.monotonic() > deadline:
                timed_out = True
                return 1
            return 0

        # The same protections for engines we did not open ourselves (user Engine/SQLDatabase).
        was_query_only = conn.execute("PRAGMA query_only").fetchone()[0]
        if not was_query_only:
            conn.execute("PRAGMA query_only=ON")
        old_attached = conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        old_length = conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _SQLITE_MAX_VALUE_BYTES)
        old_text_factory = conn.text_factory
        conn.text_factory = _lenient_text
        conn.set_authorizer(authorize)
        conn.set_progress_handler(progress, 1000)
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(sql)
                fetched = _fetch(cursor, max_rows)
            finally:
                cursor.close()
        except sqlite3.Error as exc:
            if timed_out:
                raise _Timeout from exc
            if denied:
                raise _Rejected(
                    f"Refused by the read-only connection: {denied[0]} is not allowed; "
                    "only read-only SELECT queries may run."
                ) from exc
            if any(s in str(exc) for s in _SQLITE_REFUSALS):
                raise _Rejected(f"Refused by the read-only connection: {str(exc).rstrip('.')}.") from exc
            raise
        finally:
            conn.set_progress_handler(None, 0)
            conn.set_authorizer(None)
            conn.text_factory = old_text_factory
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, old_length)
            conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, old_attached)
            conn.rollback()
            if not was_query_only:
                conn.execute("PRAGMA query_only=OFF")
        return fetched
    finally:
        pooled.close()


def _run_duckdb(engine: sqlalchemy.Engine, sql: str, deadline: float, max_rows: int) -> _Fetched:
    pooled = _checkout(engine, deadline)
    lock = threading.Lock()
    state = {"done": False, "fired": False}
    conn = pooled.driver_connection
    try:
        quiet_duckdb(conn, pooled.info)  # a no-op on our own engines; a user's engine needs it
    except Exception:
        pooled.close()
        raise

    def interrupt() -> None:
        with lock:
            if not state["done"]:
                state["fired"] = True
                conn.interrupt()

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), interrupt)
    timer.daemon = True
    cursor = pooled.cursor()
    try:
        reason = _duckdb_parser_check(cursor, sql)
        if reason is not None:
            raise _Rejected(reason)
        try:
            cursor.execute("BEGIN TRANSACTION")  # so a write that slipped through is undone
        except Exception:  # already inside a transaction opened by the driver
            pass
        timer.start()
        try:
            cursor.execute(sql)
            fetched = _fetch(cursor, max_rows)
        except Exception as exc:
            if state["fired"]:
                raise _Timeout from exc
            if "read-only" in str(exc) or "Permission Error" in str(exc):
                raise _Rejected(f"Refused by the read-only connection: {_short(str(exc))}") from exc
            raise
        return fetched
    finally:
        with lock:
            state["done"] = True
            timer.cancel()
        try:
            pooled.rollback()
        except Exception:  # no transaction active
            pass
        cursor.close()
        pooled.close()


_DUCKDB_QUERY_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"}


def _duckdb_parser_check(cursor: Any, sql: str) -> str | None:
    """The guard again, on DuckDB's own parse of ``sql`` (``json_serialize_sql``; nothing runs).

    A user's engine may be read-write with external access on, and DuckDB cannot switch external
    access off for one query without switching it off for the user's whole database for good. So
    on DuckDB the statement is checked twice, by two independent parsers: sqlglot's tree
    (``check_read_only``) and DuckDB's, which resolves names exactly as execution will (quoted
    and mixed-case function names included). Exactly one SELECT, no denied function (files,
    profiling/logging, SQL strings), no table that is a file path. Fails closed.
    """
    try:
        cursor.execute("SELECT json_serialize_sql(?::VARCHAR)", (sql,))
        tree = json.loads(cursor.fetchone()[0])
    except Exception as exc:  # no json extension, or an odd driver: refuse rather than guess
        return f"Cannot check the query with DuckDB's parser ({_short(str(exc), 200)}); it did not run."
    if tree.get("error"):
        detail = str(tree.get("error_message", ""))
        if "Only SELECT" in detail:
            return "Only a read-only SELECT query may run (DuckDB parsed another kind of statement)."
        return f"DuckDB cannot parse the query: {_short(detail, 200)}"
    statements = tree.get("statements") or []
    if len(statements) != 1:
        return f"Found {len(statements)} statements; only a single read-only SELECT query may run."
    stack: list[Any] = [statements[0]]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if isinstance(kind, str) and kind.endswith("_NODE") and kind not in _DUCKDB_QUERY_NODES:
            return f"Only a read-only SELECT query may run (DuckDB parsed a {kind} inside it)."
        name = node.get("function_name")
        if isinstance(name, str) and is_denied_function(name):
            return f"The function {name.lower()}() is not allowed in queries."
        if node.get("type") == "BASE_TABLE":
            table = str(node.get("table_name", ""))
            if any(ch in table for ch in "/\\:") or _DUCKDB_FILE_SUFFIX.search(table):
                return f"Reading files ({table!r}) is not allowed; query the database's tables."
        stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
    root = statements[0].get("node", {}) if isinstance(statements[0], dict) else {}
    if root.get("type") not in _DUCKDB_QUERY_NODES:
        return f"Only a read-only SELECT query may run (DuckDB parsed a {root.get('type', 'different')} statement)."
    return None


def _run_generic(engine: sqlalchemy.Engine, sql: str, deadline: float, max_rows: int) -> _Fetched:
    """Best effort for other server databases (SQL Server, ...): a rolled-back transaction.

    No server-side timeout is set here: a runaway query is reported as a timeout when it returns,
    but it is not interrupted (see README, Safety).
    """
    pooled = _checkout(engine, deadline)
    try:
        cursor = pooled.cursor()
        try:
            cursor.execute(sql)
            return _fetch(cursor, max_rows)
        finally:
            cursor.close()
    finally:
        try:
            pooled.rollback()
        finally:
            pooled.close()


# --------------------------------------------------------------------------- MySQL / MariaDB

_MY_SESSION_KEY = "route_graph.mysql_session"  # in a pooled connection's info: a _MySession
_MY_KILL_GRACE_S = 0.5  # KILL QUERY from a second connection if the server's limit has not stopped it
_MY_TIMEOUT_CODES = {1969, 3024}  # ER_STATEMENT_TIMEOUT (MariaDB), ER_QUERY_TIMEOUT (MySQL)
# ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION, ER_OPTION_PREVENTS_STATEMENT (--read-only,
# --secure-file-priv), and access denied to a database, table, column or privilege.
_MY_REFUSED_CODES = {1792, 1290, 1044, 1142, 1143, 1227}
_MY_POWERFUL_GRANT = re.compile(r"^GRANT (.+?) ON \*\.\* TO", re.IGNORECASE)
_MY_POWERFUL_PRIVILEGES = re.compile(r"\b(ALL PRIVILEGES|FILE|SUPER)\b", re.IGNORECASE)
_WARNED_MY_PRIVILEGED: weakref.WeakSet[sqlalchemy.Engine] = weakref.WeakSet()


@dataclass(frozen=True)
class _MySession:
    """What ``_run_mysql`` needs to know of one pooled connection (asked once, at first use)."""

    connection_id: int  # CONNECTION_ID(), for KILL QUERY
    read_only_var: str  # tx_read_only / transaction_read_only
    read_only_was: int
    limit_var: str | None  # max_statement_time (MariaDB 10.1+, s) / max_execution_time (MySQL 5.7.8+, ms)
    limit_was: Any
    release_locks: bool  # RELEASE_ALL_LOCKS() exists (MySQL 5.7.5+, MariaDB 10.5.2+)
    privileged: bool  # global ALL/FILE/SUPER: file functions and SET GLOBAL would run

    def limit(self, seconds: float) -> str:
        if self.limit_var == "max_statement_time":
            return f"{max(0.001, seconds):.3f}"
        return str(max(1, int(seconds * 1000)))


def _my_version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text.split("-")[0])[:3])


def _my_session(cursor: Any, info: dict[Any, Any]) -> _MySession:
    """Which server this is (``SELECT VERSION()``) and its session settings, once per connection."""
    known = info.get(_MY_SESSION_KEY)
    if known is not None:
        return known
    cursor.execute("SELECT VERSION(), CONNECTION_ID()")
    text, connection_id = cursor.fetchone()
    version, mariadb = _my_version(str(text)), "mariadb" in str(text).lower()
    if mariadb:
        read_only_var = "transaction_read_only" if version >= (11, 1) else "tx_read_only"
        limit_var = "max_statement_time" if version >= (10, 1) else None
        release_locks = version >= (10, 5, 2)
    else:
        read_only_var = "transaction_read_only" if version >= (5, 7, 20) else "tx_read_only"
        limit_var = "max_execution_time" if version >= (5, 7, 8) else None
        release_locks = version >= (5, 7, 5)
    cursor.execute(f"SELECT @@SESSION.{read_only_var}, " + (f"@@SESSION.{limit_var}" if limit_var else "NULL"))
    read_only_was, limit_was = cursor.fetchone()
    try:
        cursor.execute("SHOW GRANTS")
        grants = [str(row[0]) for row in cursor.fetchall()]
        privileged = any(
            (m := _MY_POWERFUL_GRANT.match(g)) and _MY_POWERFUL_PRIVILEGES.search(m.group(1)) for g in grants
        )
    except Exception:  # cannot tell: say so rather than stay silent
        privileged = True
    known = info[_MY_SESSION_KEY] = _MySession(
        int(connection_id), read_only_var, int(read_only_was), limit_var, limit_was, release_locks, privileged
    )
    return known


def _warn_once(warned: weakref.WeakSet[sqlalchemy.Engine], engine: sqlalchemy.Engine, message: str, *args: Any) -> None:
    """Log ``message`` the first time ``engine`` is seen in ``warned`` (held weakly, not by id)."""
    if engine in warned:
        return
    warned.add(engine)
    _LOG.warning(message, *args)


def _warn_privileged_once(engine: sqlalchemy.Engine) -> None:
    _warn_once(
        _WARNED_MY_PRIVILEGED,
        engine,
        "route-graph is connected to MySQL/MariaDB %s as a user with global ALL, FILE or SUPER "
        "privileges. Model SQL runs in a read-only transaction with a statement time limit, but "
        "file access (INTO OUTFILE, LOAD_FILE), SET GLOBAL, FLUSH and KILL are refused only by "
        "the SQL check; connect as a user with SELECT privileges only (docs/databases.md).",
        engine.url.render_as_string(hide_password=True),
    )


def _my_error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)  # mysql-connector, mariadb; pymysql/mysqlclient: args[0]
    if not isinstance(code, int):
        args = getattr(exc, "args", ())
        code = args[0] if args and isinstance(args[0], int) else None
    return code


def _my_kill(engine: sqlalchemy.Engine, connection_id: int) -> None:
    """``KILL QUERY`` from a second connection, outside the engine's pool (it may be full)."""
    pool = engine.pool.recreate()  # same connect arguments and listeners, its own connections
    try:
        conn = pool.connect()
        try:
            cursor = conn.cursor()
            cursor.execute(f"KILL QUERY {int(connection_id)}")
            cursor.close()
        finally:
            conn.close()
    except Exception:  # the server's own limit, or the rollback's failure, still ends it
        pass
    finally:
        pool.dispose()


def _my_cursor(driver: Any, pooled: Any) -> Any:
    """An unbuffered cursor where the driver has one (pymysql, mysqlclient): rows arrive as they
    are fetched, so the row and size caps bound memory; else the driver's default cursor."""
    package = type(driver).__module__.split(".")[0]
    if package in ("pymysql", "MySQLdb"):
        return driver.cursor(importlib.import_module(f"{package}.cursors").SSCursor)
    return pooled.cursor()


def _run_mysql(engine: sqlalchemy.Engine, sql: str, deadline: float, max_rows: int) -> _Fetched:
    """Run ``sql`` read-only and time-limited on MySQL or MariaDB, then roll back.

    ``START TRANSACTION READ ONLY`` alone is not enough: a DDL statement commits implicitly and
    would run outside it, so the session's transactions are made read-only too (restored after).
    The server stops the query at the deadline (MariaDB ``max_statement_time``, MySQL
    ``max_execution_time``); ``KILL QUERY`` from a second connection backs it up, and stops a
    result cut at ``max_rows`` instead of draining it. Always rolled back; user locks released.
    """
    pooled = _checkout(engine, deadline)
    setup = pooled.cursor()
    try:
        session = _my_session(setup, pooled.info)
    except Exception:
        setup.close()
        pooled.invalidate()
        pooled.close()
        raise
    if session.privileged:
        _warn_privileged_once(engine)
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def stop(fired: bool) -> None:
        with lock:  # held while killing: the connection goes back to the pool only after
            if state["done"]:
                return
            state["fired"] = state["fired"] or fired
            _my_kill(engine, session.connection_id)

    timer = threading.Timer(max(0.0, deadline - time.monotonic()) + _MY_KILL_GRACE_S, stop, (True,))
    timer.daemon = True
    cursor = None
    try:
        settings = [f"SESSION {session.read_only_var} = 1"]
        if session.limit_var:
            settings.append(f"SESSION {session.limit_var} = {session.limit(deadline - time.monotonic())}")
        setup.execute("SET " + ", ".join(settings))
        setup.execute("START TRANSACTION READ ONLY")
        timer.start()
        cursor = _my_cursor(pooled.driver_connection, pooled)
        cursor.execute(sql)
        fetched = _fetch(cursor, max_rows)
        if fetched.more:
            stop(False)  # the rest is not wanted: end it on the server rather than read it all
        return fetched
    except Exception as exc:
        code = _my_error_code(exc)
        if state["fired"] or code in _MY_TIMEOUT_CODES:
            raise _Timeout from exc
        if code in _MY_REFUSED_CODES:
            message = str(getattr(exc, "args", ("",))[-1]) or type(exc).__name__
            raise _Rejected(f"Refused by the server: {message}; only read-only SELECT queries may run.") from exc
        raise
    finally:
        with lock:
            state["done"] = True
            timer.cancel()
        _my_finish(pooled, setup, cursor, session)


def _my_finish(pooled: Any, setup: Any, cursor: Any, session: _MySession) -> None:
    """Roll back, release user locks, restore the session; a broken connection is discarded."""
    try:
        if cursor is not None:
            try:
                cursor.close()  # an unbuffered cursor reads what is left (nothing, once killed)
            except Exception:
                pass
        setup.execute("ROLLBACK")
        if session.release_locks:
            setup.execute("DO RELEASE_ALL_LOCKS()")
        restore = [f"SESSION {session.read_only_var} = {session.read_only_was}"]
        if session.limit_var:
            restore.append(f"SESSION {session.limit_var} = {session.limit_was}")
        setup.execute("SET " + ", ".join(restore))
    except Exception:
        pooled.invalidate()  # never hand a connection in an unknown state back to the pool
    finally:
        _close_quietly(setup, pooled)


#: A superuser's queries run as this built-in role (PostgreSQL 14+): it may read every table but
#: not call superuser-only functions (server files, adminpack, dblink_connect_u, replication
#: slots, statistics resets, signals), so the server itself refuses what a deny-list might miss.
_PG_READER_ROLE = "pg_read_all_data"
_PG_SESSION_KEY = "route_graph.pg_session"  # in a pooled connection's info: (superuser, version)
_PG_CANCEL_GRACE_S = 0.5  # the client cancels a query the server's own timeout has not stopped
_PG_TIMEOUT_STATES = {"57014", "55P03"}  # query_canceled (statement timeout), lock_not_available
_PG_REFUSED_STATES = {"25006", "42501"}  # read_only_sql_transaction, insufficient_privilege
# Weak, not id(): a new engine can reuse a collected one's id and would never be warned.
_WARNED_SUPERUSER: weakref.WeakSet[sqlalchemy.Engine] = weakref.WeakSet()
_LOG = logging.getLogger("route_graph")


def _pg_sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)


def _pg_session(cursor: Any, info: dict[Any, Any]) -> tuple[bool, int]:
    """(connected as superuser, server_version_num), asked once per pooled connection."""
    known = info.get(_PG_SESSION_KEY)
    if known is None:
        cursor.execute("SELECT current_setting('is_superuser'), current_setting('server_version_num')")
        superuser, version = cursor.fetchone()
        known = info[_PG_SESSION_KEY] = (superuser == "on", int(version))
    return known


def _warn_superuser_once(engine: sqlalchemy.Engine) -> None:
    _warn_once(
        _WARNED_SUPERUSER,
        engine,
        "route-graph is connected to PostgreSQL %s as a superuser. Model SQL runs in a read-only "
        "transaction as the role %s with a statement timeout, and the guard refuses file, "
        "connection and server-state functions; still, connect as a read-only role (README, "
        "Safety: CREATE ROLE ... LOGIN; GRANT pg_read_all_data TO ...).",
        engine.url.render_as_string(hide_password=True), _PG_READER_ROLE,
    )


def _run_postgres(engine: sqlalchemy.Engine, sql: str, deadline: float, max_rows: int) -> _Fetched:
    """Run ``sql`` in a transaction this function opens itself, whatever the engine's isolation.

    ``SET TRANSACTION READ ONLY`` and ``SET LOCAL statement_timeout`` only act inside a
    transaction, and an engine made with ``isolation_level="AUTOCOMMIT"`` has none: each statement
    would be its own, the settings void before the query runs. So the driver is switched to
    autocommit for the duration and the transaction is explicit: ``BEGIN READ ONLY``, local
    statement and lock timeouts, a superuser's role lowered to ``pg_read_all_data``, the query,
    ``ROLLBACK``; then session advisory locks (which a rollback keeps) are released and the
    driver's setting restored. A client-side cancel backs up the server's timeout.
    """
    bound_connect_timeout(engine)
    pooled = _checkout(engine, deadline)
    driver = pooled.driver_connection
    was_autocommit = getattr(driver, "autocommit", None)
    explicit = isinstance(was_autocommit, bool)
    if explicit and not was_autocommit:
        try:
            driver.autocommit = True
        except Exception:  # a transaction is open after all: let the driver keep its own
            explicit = False
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def cancel() -> None:
        with lock:
            if state["done"]:
                return
            state["fired"] = True
        try:  # psycopg/psycopg2: a separate connection asks the server to cancel the query
            cancel_safe = getattr(driver, "cancel_safe", None)  # psycopg >= 3.2; cancel() is older
            cancel_safe(timeout=5) if cancel_safe is not None else driver.cancel()
        except Exception:
            pass

    timer = threading.Timer(max(0.0, deadline - time.monotonic()) + _PG_CANCEL_GRACE_S, cancel)
    timer.daemon = True
    cursor = pooled.cursor()
    try:
        cursor.execute("BEGIN READ ONLY" if explicit else "SET TRANSACTION READ ONLY")
        remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
        cursor.execute(f"SET LOCAL statement_timeout = {remaining_ms}")
        cursor.execute(f"SET LOCAL lock_timeout = {remaining_ms}")
        superuser, version = _pg_session(cursor, pooled.info)
        if superuser:
            _warn_superuser_once(engine)
            if version >= 140000:
                # Keep the name resolution the user had ("$user" would now mean the new role).
                cursor.execute(
                    "SELECT pg_catalog.set_config('search_path', coalesce((SELECT "
                    "string_agg(pg_catalog.quote_ident(s), ',') FROM "
                    "unnest(pg_catalog.current_schemas(false)) AS s), ''), true)"
                )
                cursor.execute(f"SET LOCAL ROLE {_PG_READER_ROLE}")
        timer.start()
        rows = _pg_rows(driver, cursor, sql)
        return _fetch(rows, max_rows)
    except Exception as exc:
        sqlstate = _pg_sqlstate(exc)
        if state["fired"] or sqlstate in _PG_TIMEOUT_STATES or "statement timeout" in str(exc):
            raise _Timeout from exc
        if sqlstate in _PG_REFUSED_STATES:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise _Rejected(
                f"Refused by the read-only transaction: {first}; only read-only SELECT queries may run."
            ) from exc
        raise
    finally:
        with lock:
            state["done"] = True
            timer.cancel()
        _pg_finish(pooled, cursor, explicit, was_autocommit)


class _Batches:
    """A DB-API-like cursor over a psycopg 3 server-side cursor: ``fetchone`` from batches.

    A client-side cursor holds the whole result in memory before the first row is read (the row
    cap would come too late: ``SELECT repeat('x', 10^8) FROM generate_series(1, 100)`` is 10 GB).
    A server-side cursor sends rows when asked; batches grow while rows are small and drop to
    one row at a time once a row is large, so at most about one large row is held uncapped.
    """

    _MAX_BATCH = 256
    _LARGE_ROW = 1 << 20  # characters/bytes

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self._batch: list[Any] = []
        self._size = 1
        self.description = cursor.description

    def fetchone(self) -> Any:
        if not self._batch:
            self._batch = list(self._cursor.fetchmany(self._size))[::-1]
            if not self._batch:
                return None
            largest = max(
                sum(len(v) for v in row if isinstance(v, (str, bytes, bytearray, memoryview)))
                for row in self._batch
            )
            self._size = 1 if largest > self._LARGE_ROW else min(self._MAX_BATCH, self._size * 4)
        return self._batch.pop()


# PostgreSQL type OIDs whose text is short by construction (numbers, dates, times, booleans,
# uuids); every other column may hold a value of up to 1 GB and is cut on the server.
_PG_BOUNDED_TYPES = frozenset({16, 18, 19, 20, 21, 23, 26, 700, 701, 790, 1082, 1083, 1114, 1184, 1186, 1266, 1700, 2950})
_PG_BYTEA = 17


def _pg_capped_query(sql: str, description: Any, pg: Any) -> Any:
    """``sql`` wrapped so that every variable-length column leaves the server cut to ``MAX_CELL_CHARS + 1``.

    Measured (issue 29): through psycopg 3, ``SELECT repeat('x', 500000000)`` took 10.4 s with a
    5 s timeout, because the whole value crossed the socket after the statement had started
    returning rows (no server timeout applies then, and a cancel cannot stop a row in flight).
    Through psycopg 2 the same statement took 9.2 s on a busy machine (the 500 MB value was
    fetched whole, into memory). Cut on the server, a huge value is never transferred; the extra
    character still tells ``_cap_cell`` that the cell was cut. ``pg`` is the driver's ``sql``
    module (``psycopg.sql`` or ``psycopg2.sql``: the same composition API). None when no column
    needs it.
    """
    if all(d.type_code in _PG_BOUNDED_TYPES for d in description):
        return None
    limit = pg.Literal(MAX_CELL_CHARS + 1)
    items = []
    for i, column in enumerate(description):
        ref = pg.Identifier("route_graph_q", f"c{i}")
        if column.type_code in _PG_BOUNDED_TYPES:
            value: Any = ref
        elif column.type_code == _PG_BYTEA:
            value = pg.SQL("substring({} from 1 for {})").format(ref, limit)
        else:
            value = pg.SQL("left({}::text, {})").format(ref, limit)
        items.append(pg.SQL("{} AS {}").format(value, pg.Identifier(column.name)))
    aliases = pg.SQL(", ").join(pg.Identifier(f"c{i}") for i in range(len(description)))
    return pg.SQL("SELECT {} FROM ({}) AS route_graph_q({})").format(pg.SQL(", ").join(items), pg.SQL(sql), aliases)


def _pg_rows(driver: Any, cursor: Any, sql: str) -> Any:
    """Execute ``sql`` with every variable-length column cut on the server (``_pg_capped_query``).

    psycopg 3 reads through a server-side cursor (bounded memory and transfer), whose DECLARE
    describes the columns without running the query; psycopg 2 describes them with a ``LIMIT 0``
    probe (planned, not run) and fetches the capped query client-side.
    """
    if type(driver).__module__.split(".")[0] == "psycopg" and hasattr(driver, "cursor"):
        from psycopg import sql as pg

        server_side = driver.cursor(name="route_graph_query")
        server_side.execute(sql)  # DECLARE: planned and described, not run yet
        capped = _pg_capped_query(sql, server_side.description or (), pg)
        if capped is not None:
            server_side.close()
            server_side = driver.cursor(name="route_graph_capped")
            server_side.execute(capped)
        return _Batches(server_side)
    if type(driver).__module__.split(".")[0] == "psycopg2":
        from psycopg2 import sql as pg2

        cursor.execute(pg2.SQL("SELECT * FROM ({}) AS route_graph_probe LIMIT 0").format(pg2.SQL(sql)))
        capped = _pg_capped_query(sql, cursor.description or (), pg2)
        cursor.execute(capped if capped is not None else sql)
        return cursor
    cursor.execute(sql)
    return cursor


def _pg_finish(pooled: Any, cursor: Any, explicit: bool, was_autocommit: Any) -> None:
    """Roll back, drop session advisory locks, restore the driver; a broken connection is discarded."""
    try:
        if explicit:
            cursor.execute("ROLLBACK")
            cursor.execute("SELECT pg_catalog.pg_advisory_unlock_all()")
            if not was_autocommit:
                pooled.driver_connection.autocommit = False
        else:
            pooled.rollback()
    except Exception:
        pooled.invalidate()  # never hand a connection in an unknown state back to the pool
    finally:
        _close_quietly(cursor, pooled)


def _close_quietly(cursor: Any, pooled: Any) -> None:
    """Close the cleanup cursor (a failure there changes nothing) and return the connection."""
    try:
        cursor.close()
    except Exception:
        pass
    pooled.close()


#: Seconds a PostgreSQL connection attempt may take (libpq/psycopg ``connect_timeout``) when the
#: engine's URL or connect_args set none: a server that accepts TCP and never answers must not
#: hang opening the database or a run.
PG_CONNECT_TIMEOUT_S = 10
_CONNECT_TIMEOUT_KEY = "_route_graph_connect_timeout"


def bound_connect_timeout(engine: sqlalchemy.Engine, seconds: int = PG_CONNECT_TIMEOUT_S) -> None:
    """Give a PostgreSQL (psycopg/psycopg2) engine a connect timeout unless it has one; idempotent.

    A listener adds ``connect_timeout`` to the driver's connect arguments only where the user's URL
    and ``connect_args`` set none, so an explicit choice is kept. Other engines are left alone.
    """
    if engine.dialect.name != "postgresql" or engine.dialect.driver not in ("psycopg", "psycopg2"):
        return
    if getattr(engine, _CONNECT_TIMEOUT_KEY, False):
        return

    def add_timeout(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        cparams.setdefault("connect_timeout", seconds)

    sqlalchemy.event.listen(engine, "do_connect", add_timeout)
    setattr(engine, _CONNECT_TIMEOUT_KEY, True)


_RUNNERS: dict[str, Callable[..., _Fetched]] = {
    "sqlite": _run_sqlite,
    "duckdb": _run_duckdb,
    "postgresql": _run_postgres,
    "mysql": _run_mysql,
    "mariadb": _run_mysql,
}
# Errors that mean "this SQL failed", as opposed to a bug in the caller.
_VALUE_ERRORS = (ValueError, ArithmeticError, MemoryError, RecursionError)


def execute_sql(
    db: SqlTarget, sql: str, *, timeout_s: float = 5.0, max_rows: int = 1000
) -> ExecutionResult:
    """Run one read-only query; never raises for bad SQL (see ``ExecutionResult.error_kind``).

    ``timeout_s`` bounds the wait for a pooled connection plus the query and its fetch.
    """
    if not isinstance(sql, str):
        raise TypeError(f"sql must be a str, got {type(sql).__name__}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows!r}")
    start = time.perf_counter()

    def failed(message: str, kind: ErrorKind) -> ExecutionResult:
        return ExecutionResult(
            sql=sql, ok=False, error=_short(message), error_kind=kind,
            elapsed_s=round(time.perf_counter() - start, 6),
        )

    reason = check_read_only(sql, db.dialect)
    if reason is not None:
        return failed(reason, "rejected")
    engine = db.engine
    runner = _RUNNERS.get(engine.dialect.name, _run_generic)
    if runner is _run_sqlite and engine.dialect.driver != "pysqlite":
        runner = _run_generic  # e.g. aiosqlite or sqlcipher: no authorizer API to rely on
    dbapi_error = getattr(getattr(engine.dialect, "loaded_dbapi", None), "Error", sqlite3.Error)
    timeout_message = f"query exceeded the {float(timeout_s)} s limit"
    run_start = time.perf_counter()
    deadline = time.monotonic() + timeout_s  # before the checkout: waiting for a connection counts
    try:
        fetched = runner(engine, _strip_sql(sql), deadline, max_rows)
    except _NoConnection:
        if _pool_is_full(engine):
            return failed(
                f"no database connection became free within the {float(timeout_s)} s limit (all are "
                "busy with other queries), so the query did not run; run fewer questions at once or "
                "raise the execution timeout",
                "timeout",
            )
        return failed(
            f"no database connection became free within the {float(timeout_s)} s limit: connecting "
            "to the database did not finish (the server does not answer), so the query did not "
            "run; check that the database server is up and reachable",
            "timeout",
        )
    except _Timeout:
        return failed(timeout_message, "timeout")
    except _Rejected as exc:
        return failed(str(exc), "rejected")
    except (dbapi_error, sqlalchemy.exc.SQLAlchemyError, *_VALUE_ERRORS) as exc:
        orig = getattr(exc, "orig", None)
        return failed(str(orig if orig is not None else exc) or type(exc).__name__, "error")
    if runner in (_run_generic, _run_postgres, _run_mysql) and time.perf_counter() - run_start > timeout_s:
        return failed(timeout_message, "timeout")  # could not interrupt it; late still means failed
    elapsed = time.perf_counter() - start
    return ExecutionResult(
        sql=sql, ok=True, columns=fetched.columns, rows=fetched.rows, row_count=len(fetched.rows),
        truncated=fetched.more, cells_truncated=fetched.cells_truncated, elapsed_s=round(elapsed, 6),
    )


# --------------------------------------------------------------------------- presentation


def format_value(value: Any, max_chars: int = 60) -> str:
    """One cell as prompt text: NULL for None, one line, cut to ``max_chars`` with "…" (<= 0: no cut)."""
    if value is None:
        text = "NULL"
    elif isinstance(value, (bytes, bytearray, memoryview)):
        text = "x'" + bytes(value).hex() + "'"
    else:
        text = str(value)
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")
    if max_chars > 0 and len(text) > max_chars:
        text = text[:max_chars] + "…"
    return text


def summarize_result(result: ExecutionResult, *, max_rows: int = 5, value_chars: int = 60) -> str:
    """The execution feedback shown to the model: the error, or a bounded description of the rows."""
    if not result.ok:
        return f"Execution error: {_short(result.error or 'unknown error')}"
    columns = list(result.columns)
    shown_cols = columns[:_SUMMARY_MAX_COLUMNS]
    more_cols = len(columns) - len(shown_cols)
    lines = [
        "Columns: "
        + ", ".join(format_value(c, value_chars) for c in shown_cols)
        + (f", … (+{more_cols} more columns)" if more_cols else "")
    ]
    if result.truncated:
        lines.append(f"Rows: more than {result.row_count} (only the first {result.row_count} were fetched)")
    else:
        lines.append(f"Rows: {result.row_count}")
    if not result.rows:
        lines.append("The result is empty.")
        return "\n".join(lines)
    shown = result.rows[: max(0, max_rows)]
    if shown:
        lines.append(f"First {len(shown)} rows:" if len(shown) < len(result.rows) else "All rows:")
        lines.append("\t".join(format_value(c, value_chars) for c in shown_cols))
        lines.extend("\t".join(format_value(v, value_chars) for v in row[: len(shown_cols)]) for row in shown)
    for i, name in enumerate(columns):
        if all(i < len(row) and row[i] is None for row in result.rows):
            lines.append(f"Column {format_value(name, value_chars)} is NULL in every row.")
    if result.cells_truncated:
        lines.append(
            f"{result.cells_truncated} long values were cut to their first {MAX_CELL_CHARS} characters."
        )
    return "\n".join(lines)


def _json_value(value: Any) -> Any:
    """One result value as None, bool, 64-bit int, finite float, str, list or dict."""
    if value is None or isinstance(value, bool):
        return bool(value) if value is not None else None
    if isinstance(value, int):
        number = int(value)
        return number if _INT64_MIN <= number <= _INT64_MAX else str(number)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return utf8_safe(str(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        number = float(value)
        return number if math.isfinite(number) else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (_dt.date, _dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {utf8_safe(str(k)): _json_value(v) for k, v in value.items()}
    return utf8_safe(str(value))  # UUID, timedelta, intervals, driver types
