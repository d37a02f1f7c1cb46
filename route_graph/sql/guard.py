"""The read-only guard: is this SQL exactly one read-only query? Decided before any database sees it.

``check_read_only`` parses the statement with sqlglot and allows exactly one SELECT (or set
operation / WITH ... SELECT) that contains no DML, DDL, command or denied function. Function
names are matched as the database resolves them, on the tree and on the tokens, by name and by
family (``is_denied_function``); Unicode-escaped identifiers are refused outright. SQL over
``sql_bounds``' length or nesting limits is refused before it is parsed, and every scan of the
raw text is linear. This is the first of two independent guards: each dialect's runner
(``sql.dialects``) makes the connection or server refuse what slips through.
"""

from __future__ import annotations

import logging
import re
import threading

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from route_graph.sql.result import short_error
from route_graph.sql_bounds import check_sql_bounds

__all__ = ["DENIED_FUNCTIONS", "DENIED_FUNCTION_PREFIXES", "DENIED_FUNCTION_SUFFIXES", "FILE_LIKE_TABLE", "check_read_only", "is_denied_function", "strip_statement"]

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

#: A table name that is really a file (DuckDB reads such "tables" from disk).
FILE_LIKE_TABLE = re.compile(
    r"\.(csv|tsv|txt|parquet|json|jsonl|ndjson|xlsx|gz|zst|db|sqlite|duckdb)$", re.IGNORECASE
)

_WORD = re.compile(r"[A-Za-z_]+")

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


def strip_statement(sql: str) -> str:
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
    text = strip_statement(sql)
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
        first = short_error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, 200)
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
            if any(ch in name for ch in "/\\:") or FILE_LIKE_TABLE.search(name):
                return f"Reading files ({name!r}) is not allowed; query the database's tables."
    return None

