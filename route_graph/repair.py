"""Deterministic SQL repairs: exact ones tried before a model is asked, close-name guesses only
as a last resort.

The commonest failure of small models on joins is a column qualified with the wrong alias
(``T2.name`` where ``name`` lives in ``T1``'s table); the database names it in its error
("no such column: T2.name"). When exactly one table joined in that query (one alias of the
column's scope) has the column, the qualifier can only mean that table: the column is
re-qualified on sqlglot's tree, never by text substitution. Anything ambiguous (no owner, or two
aliases that have the column, as in a self-join) is left to the model. The caller keeps the
result only if it executes.

``join_owner_table`` and ``closest_name_fix`` are different: they *guess*. The first joins the one
table that has a missing column under exactly that name and a foreign key to the query's only
table (small models often take a column from a table they did not join); the second (a column or table name the database does not
have becomes the closest name it does have, by ``difflib`` similarity; an ambiguous column is
qualified with the first table of its scope that has it). The graph calls it only in its rescue
stage, when no candidate SQL executes at all, so a wrong guess can only replace an answer that was
already wrong.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import Scope, traverse_scope

from route_graph.linking import parse_bounded
from route_graph.sql.schema import Schema, Table

__all__ = [
    "RESCUE_RULES", "MissingColumn", "RepairRule", "closest_name_fix", "join_owner_table", "missing_column",
    "quoted_string_fix", "requalify_column", "single_quoted_literals",
]

_NAME = r"[\"`\[]?([A-Za-z_][\w ]*?)[\"`\]]?"
# How engines name a qualified column that does not exist (SQLite, DuckDB, PostgreSQL, MySQL).
_MISSING_COLUMN = [
    re.compile(rf"no such column:\s*{_NAME}\.{_NAME}(?:\s|$|,)", re.IGNORECASE),
    re.compile(r'Table "([^"]+)" does not have a column named "([^"]+)"', re.IGNORECASE),
    re.compile(rf"column\s+{_NAME}\.{_NAME}\s+does not exist", re.IGNORECASE),
    re.compile(r"Unknown column '([^'.]+)\.([^']+)'", re.IGNORECASE),
]
_MAX_ERROR_CHARS = 1_000
# SQLite's wording for an unqualified unknown column, an unknown table and an ambiguous column.
_UNQUALIFIED_COLUMN = re.compile(rf"no such column:\s*{_NAME}(?:\s|$|,)", re.IGNORECASE)
_MISSING_TABLE = re.compile(rf"no such table:\s*(?:main\.)?{_NAME}(?:\s|$|,)", re.IGNORECASE)
_AMBIGUOUS_COLUMN = re.compile(rf"ambiguous column name:\s*{_NAME}(?:\s|$|,)", re.IGNORECASE)
# How PostgreSQL and DuckDB name a double-quoted name they found no column for.
_MISSING_QUOTED = [
    re.compile(r'column "([^"]+)" does not exist', re.IGNORECASE),
    re.compile(r'Referenced column "([^"]+)" not found', re.IGNORECASE),
]
#: Least ``difflib`` ratio for a name to count as "the one meant" (0.6 is difflib's own default).
NAME_CUTOFF = 0.6


@dataclass(frozen=True)
class MissingColumn:
    """``qualifier.column`` that an execution error says does not exist."""

    qualifier: str
    column: str


def missing_column(error: str | None) -> MissingColumn | None:
    """The wrongly qualified column an execution error names, or None for any other error."""
    text = (error or "")[:_MAX_ERROR_CHARS]
    for pattern in _MISSING_COLUMN:
        match = pattern.search(text + " ")
        if match:
            return MissingColumn(qualifier=match.group(1).strip(), column=match.group(2).strip())
    return None


def requalify_column(sql: str, error: str | None, schema: Schema, dialect: str = "sqlite") -> str | None:
    """``sql`` with the column the error names re-qualified to the only joined table that has it.

    Returns None when the error is not a missing qualified column, the SQL does not parse, or in
    some scope that uses the column not exactly one of its tables has it. Every occurrence of
    ``qualifier.column`` is re-qualified (each within its own scope).
    """
    missing = missing_column(error)
    if missing is None:
        return None
    return _rewritten(sql, dialect, lambda tree: _requalify(tree, missing, schema))


def quoted_string_fix(sql: str, error: str | None, schema: Schema, dialect: str = "sqlite") -> str | None:
    """``sql`` with a double-quoted name the database found no column for turned into a string literal.

    SQLite reads ``country = "Germany"`` as a string when no column is called Germany, and Spider's
    gold SQL (so a model tuned on it: 102 of phase 3d's 400 answers) writes literals that way;
    PostgreSQL and DuckDB read it as a column and fail. Only an unqualified, double-quoted name
    the error names and no table of the schema has as a column is rewritten; None otherwise.
    """
    text = (error or "")[:_MAX_ERROR_CHARS]
    names = {match.group(1) for pattern in _MISSING_QUOTED for match in pattern.finditer(text)}
    if not names:
        return None
    return _rewritten(sql, dialect, lambda tree: _quoted_names_to_strings(tree, schema, names))


def single_quoted_literals(sql: str, schema: Schema, dialect: str = "sqlite") -> str | None:
    """``sql`` with every double-quoted name that can only be a string (SQLite's reading) single-quoted.

    For training targets: Spider's gold writes ``name = "Gasoline"``, and a model tuned on it writes
    SQL that PostgreSQL and DuckDB reject (``quoted_string_fix`` mends that after the error). The
    same rule as ``quoted_string_fix`` without an error: unqualified, double-quoted, no column of
    the schema and no alias of the query by that name. None when nothing changes or it does not
    parse; callers check by execution that the rows are unchanged.
    """
    return _rewritten(sql, dialect, lambda tree: _quoted_names_to_strings(tree, schema, None))


def _quoted_names_to_strings(tree: exp.Expression, schema: Schema, names: set[str] | None) -> bool:
    """Turn unqualified double-quoted column references that no schema column or query alias has
    (limited to ``names`` when given) into string literals, in place; True if any changed."""
    columns = {column.name.lower() for table in schema.tables for column in table.columns}
    aliases = {alias.alias.lower() for alias in tree.find_all(exp.Alias)}
    meant = [
        node for node in tree.find_all(exp.Column)
        if not node.table and isinstance(node.this, exp.Identifier) and node.this.quoted
        and (names is None or node.name in names)
        and node.name.lower() not in columns and node.name.lower() not in aliases
    ]
    for node in meant:
        node.replace(exp.Literal.string(node.name))
    return bool(meant)


def _rewritten(sql: str, dialect: str, rewrite: Callable[[exp.Expression], bool]) -> str | None:
    """Parse ``sql`` (bounded), let ``rewrite`` change the tree in place; its SQL if it changed, else None.

    Every repair here is a guess, so a parse or rewrite failure is no repair, never an exception.
    """
    tree = parse_bounded(sql, dialect)
    if tree is None:
        return None
    try:
        return tree.sql(dialect=dialect) if rewrite(tree) else None
    except (SqlglotError, ValueError, KeyError, RecursionError):
        return None


def _requalify(tree: exp.Expression, missing: MissingColumn, schema: Schema) -> bool:
    qualifier, column = missing.qualifier.lower(), missing.column.lower()
    changed = False
    for scope in traverse_scope(tree):
        wrong = [
            c for c in scope.columns
            if c.table and c.table.lower() == qualifier and c.name.lower() == column
        ]
        if not wrong:
            continue
        owners = [
            alias for alias, source in scope.sources.items()
            if isinstance(source, exp.Table)
            and (table := schema.table(source.name)) is not None
            and table.column(missing.column) is not None
        ]
        if len(owners) != 1 or owners[0].lower() == qualifier:
            return False  # ambiguous, unknown, or the column is there after all: not ours to guess
        for node in wrong:
            node.set("table", exp.to_identifier(owners[0]))
        changed = True
    return changed


def closest_name_fix(sql: str, error: str | None, schema: Schema, dialect: str = "sqlite") -> str | None:
    """``sql`` with the name the error complains about replaced by a guess, or None.

    * ``no such column: [q.]x``: within each scope that uses it, ``x`` becomes the most similar
      column of ``q``'s table (of all the scope's tables when unqualified, or when ``q``'s table has
      nothing close), re-qualified to the table that has it; a tie or nothing above
      ``NAME_CUTOFF`` is no guess.
    * ``no such table: t``: ``t`` becomes the most similar table of the schema.
    * ``ambiguous column name: x``: unqualified ``x`` is qualified with the scope's first table
      that has it (FROM order).
    A last-resort guess: the caller keeps it only if it executes (see the module docstring).
    """
    text = (error or "")[:_MAX_ERROR_CHARS] + " "
    if (missing := missing_column(error)) is not None:
        return _rewritten(sql, dialect, lambda tree: _rename_column(tree, missing.qualifier, missing.column, schema))
    if match := _UNQUALIFIED_COLUMN.search(text):
        name = match.group(1).strip()
        return _rewritten(sql, dialect, lambda tree: _rename_column(tree, None, name, schema))
    if match := _MISSING_TABLE.search(text):
        name = match.group(1).strip()
        return _rewritten(sql, dialect, lambda tree: _rename_table(tree, name, schema))
    if match := _AMBIGUOUS_COLUMN.search(text):
        name = match.group(1).strip()
        return _rewritten(sql, dialect, lambda tree: _qualify_ambiguous(tree, name, schema))
    return None


def _closest(name: str, choices: dict[str, list[str]]) -> str | None:
    """The unique choice whose spellings (``{real name: [spellings]}``) are most similar to ``name``
    (``difflib`` ratio, case-insensitive), or None on a tie or nothing above ``NAME_CUTOFF``."""
    wanted = name.lower()
    scored = sorted(
        (
            (max(difflib.SequenceMatcher(None, wanted, s.lower()).ratio() for s in spellings), real)
            for real, spellings in choices.items()
        ),
        reverse=True,
    )
    if not scored or scored[0][0] < NAME_CUTOFF:
        return None
    if len(scored) > 1 and scored[1][0] == scored[0][0]:
        return None
    return scored[0][1]


def _scope_tables(scope: Scope, schema: Schema) -> list[tuple[str, Table]]:
    """(alias, schema table) of the scope's base-table sources, in FROM order."""
    return [
        (alias, table)
        for alias, source in scope.sources.items()
        if isinstance(source, exp.Table) and (table := schema.table(source.name)) is not None
    ]


def _rename_column(tree: exp.Expression, qualifier: str | None, column: str, schema: Schema) -> bool:
    wanted_q = (qualifier or "").lower()
    changed = False
    for scope in traverse_scope(tree):
        wrong = [
            c for c in scope.columns
            if c.name.lower() == column.lower() and (c.table or "").lower() == wanted_q
        ]
        if not wrong:
            continue
        tables = _scope_tables(scope, schema)
        # The qualifier's own table first; then every table of the scope.
        pools = [[(a, t) for a, t in tables if a.lower() == wanted_q]] if wanted_q else []
        pools.append(tables)
        for pool in pools:
            owner = {c.name: alias for alias, t in reversed(pool) for c in t.columns}  # first table wins
            # Small models prefix a column with its table ("singer_name" for singer.name).
            spellings: dict[str, list[str]] = {}
            for alias, t in pool:
                for c in t.columns:
                    spellings.setdefault(c.name, []).extend([c.name, f"{t.name}_{c.name}"])
            best = _closest(column, spellings)
            if best is None or best.lower() == column.lower():
                continue
            for node in wrong:
                node.set("this", exp.to_identifier(best))
                if wanted_q or len(tables) > 1:
                    node.set("table", exp.to_identifier(owner[best]))
            changed = True
            break
    return changed


def _rename_table(tree: exp.Expression, name: str, schema: Schema) -> bool:
    best = _closest(name, {t.name: [t.name] for t in schema.tables})
    if best is None or best.lower() == name.lower():
        return False
    changed = False
    for node in tree.find_all(exp.Table):
        if node.name.lower() == name.lower():
            node.set("this", exp.to_identifier(best))
            changed = True
    return changed


def _qualify_ambiguous(tree: exp.Expression, column: str, schema: Schema) -> bool:
    changed = False
    for scope in traverse_scope(tree):
        bare = [c for c in scope.columns if not c.table and c.name.lower() == column.lower()]
        if not bare:
            continue
        owner = next((alias for alias, table in _scope_tables(scope, schema) if table.column(column)), None)
        if owner is None:
            continue
        for node in bare:
            node.set("table", exp.to_identifier(owner))
        changed = True
    return changed


def join_owner_table(sql: str, error: str | None, schema: Schema, dialect: str = "sqlite") -> str | None:
    """``sql`` with the table that owns a missing column joined in, or None.

    For ``no such column: [q.]x`` in a scope that reads one table ``A`` (no joins) which lacks
    ``x``: if exactly one other table ``B`` has a column named ``x`` and a foreign key links ``A``
    and ``B``, the scope becomes ``FROM A JOIN B ON <key>``, ``x`` is qualified with ``B`` and the
    scope's other unqualified columns with ``A`` (or ``B`` when only it has them). A last-resort
    guess, like ``closest_name_fix``.
    """
    text = (error or "")[:_MAX_ERROR_CHARS] + " "
    missing = missing_column(error)
    if missing is None and (match := _UNQUALIFIED_COLUMN.search(text)):
        missing = MissingColumn(qualifier="", column=match.group(1).strip())
    if missing is None:
        return None
    return _rewritten(sql, dialect, lambda tree: _join_owner(tree, missing, schema))


def _key_pair(a: Table, b: Table) -> tuple[str, str] | None:
    """(column of a, column of b) of the first foreign key between the two tables, either way."""
    for fk in a.foreign_keys:
        if fk.ref_table.lower() == b.name.lower():
            return fk.column, fk.ref_column
    for fk in b.foreign_keys:
        if fk.ref_table.lower() == a.name.lower():
            return fk.ref_column, fk.column
    return None


def _join_owner(tree: exp.Expression, missing: MissingColumn, schema: Schema) -> bool:
    qualifier, column = missing.qualifier.lower(), missing.column.lower()
    for scope in traverse_scope(tree):
        wrong = [c for c in scope.columns if c.name.lower() == column and (c.table or "").lower() == qualifier]
        if not wrong:
            continue
        tables = _scope_tables(scope, schema)
        select = scope.expression
        if len(tables) != 1 or len(scope.sources) != 1 or not isinstance(select, exp.Select) or select.args.get("joins"):
            return False
        alias, base = tables[0]
        if base.column(column) is not None:
            return False
        owners = [
            (t, pair) for t in schema.tables
            if t.name.lower() != base.name.lower() and t.column(column) is not None
            and (pair := _key_pair(base, t)) is not None
        ]
        if len(owners) != 1:
            return False
        owner, (base_key, owner_key) = owners[0]
        for node in scope.columns:
            if node in wrong:
                node.set("table", exp.to_identifier(owner.name))
            elif not node.table:
                home = alias if base.column(node.name) is not None else owner.name if owner.column(node.name) else None
                if home is not None:
                    node.set("table", exp.to_identifier(home))
        on = exp.EQ(this=exp.column(base_key, table=alias), expression=exp.column(owner_key, table=owner.name))
        select.join(exp.to_table(owner.name), on=on, copy=False)
        return True
    return False


#: A repair rule: (sql, the database's error, schema, dialect) -> repaired SQL, or None if it does not apply.
RepairRule = Callable[[str, str | None, Schema, str], str | None]
#: The rules the rescue stage tries on each error, in order (the order is behaviour, as in
#: sqlglot's optimizer ``RULES``): the exact re-qualification first, then the two guesses.
RESCUE_RULES: tuple[RepairRule, ...] = (requalify_column, join_owner_table, closest_name_fix)
