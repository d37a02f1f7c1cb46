"""Rule-based corruptions of a gold SQL query, done on the sqlglot AST (wrong SQL for NC data).

Noise correction learns to spot SQL that runs but answers a different question. Realistic wrong
SQL is one small edit away from the right one: a wrong column, a dropped or altered predicate, a
wrong join key or aggregate, a flipped ORDER BY, a changed LIMIT or DISTINCT. This module only
proposes such edits; ``synthesis`` keeps one only if it executes to a *different* result than
the gold query (an edit can be a no-op on a given database, e.g. DISTINCT over unique rows).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from route_graph.sql.schema import Schema

__all__ = ["CORRUPTION_KINDS", "Corruption", "corrupt_sql", "render_sql"]


@dataclass(frozen=True)
class Corruption:
    """One edited query: which rule made it and the resulting SQL text."""

    kind: str
    sql: str


def render_sql(sql: str, dialect: str = "sqlite") -> str | None:
    """The query as sqlglot prints it (the style of every corrupted query); None if unparseable."""
    tree = _parse(sql, dialect)
    return tree.sql(dialect=dialect) if tree is not None else None


def _parse(sql: str, dialect: str) -> exp.Expression | None:
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except (SqlglotError, ValueError, RecursionError):
        return None
    return tree


# ---------------------------------------------------------------------------------------- helpers
def _alias_map(tree: exp.Expression, schema: Schema) -> dict[str, str]:
    """alias or table name (lower) -> schema table name, for every base table in the query."""
    aliases: dict[str, str] = {}
    for node in tree.find_all(exp.Table):
        table = schema.table(node.name)
        if table is not None:
            aliases[node.alias_or_name.lower()] = table.name
            aliases.setdefault(node.name.lower(), table.name)
    return aliases


def _owner(column: exp.Column, aliases: dict[str, str], schema: Schema) -> str | None:
    """Schema table of a column reference: by its qualifier, else the unique query table having it."""
    if column.table:
        name = aliases.get(column.table.lower())
        table = schema.table(name) if name else None
        return name if table is not None and table.column(column.name) is not None else None
    owners = {t for t in aliases.values() if (tb := schema.table(t)) is not None and tb.column(column.name)}
    return owners.pop() if len(owners) == 1 else None


_NUMERIC = ("INT", "REAL", "NUM", "FLOA", "DOUB", "DEC", "BOOL")


def _family(type_name: str | None) -> str:
    upper = (type_name or "").upper()
    return "number" if any(k in upper for k in _NUMERIC) else "text"


def _sibling_columns(schema: Schema, table_name: str, column_name: str, keys_only: bool = False) -> list[str]:
    """Other columns of the same table, same type family first (plausible, and executable)."""
    table = schema.table(table_name)
    if table is None:
        return []
    current = table.column(column_name)
    family = _family(getattr(current, "type", None))
    others = [c for c in table.columns if c.name.lower() != column_name.lower()]
    if keys_only:
        keyish = [c for c in others if c.primary_key or c.name.lower().endswith("id")]
        others = keyish or others
    same = [c.name for c in others if _family(getattr(c, "type", None)) == family]
    return same or [c.name for c in others]


def _replace_column(column: exp.Column, new_name: str) -> None:
    column.set("this", exp.to_identifier(new_name))


def _in_join_condition(node: exp.Expression) -> bool:
    parent = node.parent
    while parent is not None:
        if isinstance(parent, exp.Join):
            return True
        if isinstance(parent, (exp.Select, exp.Subquery)):
            return False
        parent = parent.parent
    return False


_Rule = Callable[[exp.Expression, Schema, random.Random, str], Iterator[exp.Expression]]


def _edit_copy(tree: exp.Expression, target: exp.Expression) -> tuple[exp.Expression, exp.Expression]:
    """A deep copy of ``tree`` and the node of the copy at ``target``'s position (walk order)."""
    copy = tree.copy()
    position = next(i for i, node in enumerate(tree.walk()) if node is target)
    mirrored = next(node for i, node in enumerate(copy.walk()) if i == position)
    return copy, mirrored


# ------------------------------------------------------------------------------------------ rules
def _wrong_column(tree: exp.Expression, schema: Schema, rng: random.Random, dialect: str) -> Iterator[exp.Expression]:
    aliases = _alias_map(tree, schema)
    for column in list(tree.find_all(exp.Column)):
        if not column.name or _in_join_condition(column):
            continue
        owner = _owner(column, aliases, schema)
        siblings = _sibling_columns(schema, owner, column.name) if owner else []
        if siblings:
            copy, node = _edit_copy(tree, column)
            _replace_column(node, rng.choice(siblings))  # type: ignore[arg-type]
            yield copy


def _conditions(tree: exp.Expression) -> list[exp.Expression]:
    """Leaf predicates of every WHERE/HAVING (below AND/OR connectors)."""
    leaves: list[exp.Expression] = []
    for clause in list(tree.find_all(exp.Where)) + list(tree.find_all(exp.Having)):
        stack = [clause.this]
        while stack:
            node = stack.pop()
            if isinstance(node, exp.Paren):
                stack.append(node.this)
            elif isinstance(node, exp.Connector):
                stack.extend([node.left, node.right])
            else:
                leaves.append(node)
    return leaves


def _drop_predicate(tree: exp.Expression, schema: Schema, rng: random.Random, dialect: str) -> Iterator[exp.Expression]:
    for target in _conditions(tree):
        copy, node = _edit_copy(tree, target)
        parent = node.parent
        while isinstance(parent, exp.Paren):
            node, parent = parent, parent.parent
        if isinstance(parent, exp.Connector):
            other = parent.right if parent.left is node else parent.left
            parent.replace(other)
        elif isinstance(parent, (exp.Where, exp.Having)):
            parent.pop()
        else:
            continue
        yield copy


_FLIP: dict[type, type] = {
    exp.EQ: exp.NEQ,
    exp.NEQ: exp.EQ,
    exp.GT: exp.LT,
    exp.LT: exp.GT,
    exp.GTE: exp.LT,
    exp.LTE: exp.GT,
}


def _alter_predicate(tree: exp.Expression, schema: Schema, rng: random.Random, dialect: str) -> Iterator[exp.Expression]:
    for target in _conditions(tree):
        copy, node = _edit_copy(tree, target)
        flipped = _FLIP.get(type(node))
        if flipped is not None:
            node.replace(flipped(this=node.left, expression=node.right))
            yield copy
        elif isinstance(node, exp.Like):
            node.replace(exp.Not(this=node.copy()))
            yield copy
        elif isinstance(node, exp.Not):
            node.replace(node.this)
            yield copy
        elif isinstance(node, exp.In) and not node.args.get("query"):
            node.replace(exp.Not(this=node.copy()))
            yield copy
    for target in list(tree.find_all(exp.And)) + list(tree.find_all(exp.Or)):
        if not (target.find_ancestor(exp.Where) or target.find_ancestor(exp.Having)):
            continue
        copy, node = _edit_copy(tree, target)
        swapped = exp.Or if isinstance(node, exp.And) else exp.And
        node.replace(swapped(this=node.left, expression=node.right))
        yield copy


def _wrong_join_key(tree: exp.Expression, schema: Schema, rng: random.Random, dialect: str) -> Iterator[exp.Expression]:
    aliases = _alias_map(tree, schema)
    for join in tree.find_all(exp.Join):
        condition = join.args.get("on")
        if condition is None:
            continue
        for column in condition.find_all(exp.Column):
            owner = _owner(column, aliases, schema)
            siblings = _sibling_columns(schema, owner, column.name, keys_only=True) if owner else []
            if not siblings:
                continue
            copy, node = _edit_copy(tree, column)
            _replace_column(node, rng.choice(siblings))  # type: ignore[arg-type]
            yield copy


_AGGREGATE_SWAP: dict[type, tuple[type, ...]] = {
    exp.Max: (exp.Min,),
    exp.Min: (exp.Max,),
    exp.Avg: (exp.Sum, exp.Max, exp.Min),
    exp.Sum: (exp.Avg, exp.Max),
}


def _wrong_aggregate(tree: exp.Expression, schema: Schema, rng: random.Random, dialect: str) -> Iterator[exp.Expression]:
    for target in tree.find_all(exp.AggFunc):
        copy, node = _edit_copy(tree, target)
        swaps = _AGGREGATE_SWAP.get(type(node))
        if swaps:
            node.replace(rng.choice(swaps)(this=node.this))
            yield copy
        elif isinstance(node, exp.Count):
            inner = node.this
            if isinstance(inner, exp.Distinct):
                node.set("this", inner.expressions[0] if inner.expressions else exp.Star())
                yield copy
            elif isinstance(inner, exp.Column):
                node.set("this", exp.Distinct(expressions=[inner.copy()]))
                yield copy


@lru_cache(maxsize=64)
def _default_nulls_first(dialect: str, desc: bool) -> bool:
    """The NULL placement a dialect implies for a plain ASC/DESC (so printing adds no NULLS clause)."""
    tree = sqlglot.parse_one(f"SELECT x FROM t ORDER BY x {'DESC' if desc else 'ASC'}", read=dialect)
    return bool(tree.find(exp.Ordered).args.get("nulls_first"))  # type: ignore[union-attr]


def _flip_order(tree: exp.Expression, schema: Schema, rng: random.Random, dialect: str) -> Iterator[exp.Expression]:
    for target in tree.find_all(exp.Ordered):
        copy, node = _edit_copy(tree, target)
        desc = not node.args.get("desc")
        node.set("desc", desc)
        node.set("nulls_first", _default_nulls_first(dialect, desc))  # no NULLS FIRST/LAST noise
        yield copy


def _change_limit(tree: exp.Expression, schema: Schema, rng: random.Random, dialect: str) -> Iterator[exp.Expression]:
    for target in tree.find_all(exp.Limit):
        value = target.expression
        if isinstance(value, exp.Literal) and value.is_int:
            copy, node = _edit_copy(tree, target)
            number = int(value.this)
            node.set("expression", exp.Literal.number(number + rng.choice((1, 2)) if number <= 3 else number - 1))
            yield copy
        copy, node = _edit_copy(tree, target)
        node.pop()
        yield copy


def _toggle_distinct(tree: exp.Expression, schema: Schema, rng: random.Random, dialect: str) -> Iterator[exp.Expression]:
    for target in tree.find_all(exp.Select):
        copy, node = _edit_copy(tree, target)
        node.set("distinct", None if node.args.get("distinct") else exp.Distinct())
        yield copy


CORRUPTION_KINDS: dict[str, _Rule] = {
    "wrong_column": _wrong_column,
    "drop_predicate": _drop_predicate,
    "alter_predicate": _alter_predicate,
    "wrong_join_key": _wrong_join_key,
    "wrong_aggregate": _wrong_aggregate,
    "flip_order": _flip_order,
    "change_limit": _change_limit,
    "toggle_distinct": _toggle_distinct,
}


def corrupt_sql(
    sql: str,
    schema: Schema,
    dialect: str = "sqlite",
    *,
    rng: random.Random | None = None,
    kinds: tuple[str, ...] | None = None,
) -> list[Corruption]:
    """Every single-edit corruption of ``sql``, in a random order (``rng``) that mixes the kinds.

    Kinds are interleaved round-robin after shuffling, so the first few candidates cover
    different rules; callers try them in order until one changes the execution result.
    Unparseable SQL gives ``[]``; edits that print the same SQL are dropped.
    """
    rng = rng or random.Random(0)
    tree = _parse(sql, dialect)
    if tree is None:
        return []
    original = tree.sql(dialect=dialect)
    chosen = list(kinds) if kinds is not None else list(CORRUPTION_KINDS)
    unknown = set(chosen) - set(CORRUPTION_KINDS)
    if unknown:
        raise ValueError(f"Unknown corruption kind(s) {sorted(unknown)}; choose from {sorted(CORRUPTION_KINDS)}.")
    rng.shuffle(chosen)
    per_kind: list[list[Corruption]] = []
    seen = {original}
    for kind in chosen:
        found: list[Corruption] = []
        try:
            for edited in CORRUPTION_KINDS[kind](tree, schema, rng, dialect):
                text = edited.sql(dialect=dialect)
                if text not in seen:
                    seen.add(text)
                    found.append(Corruption(kind, text))
        except (SqlglotError, ValueError, AttributeError, IndexError, KeyError):
            continue  # an odd query shape: this rule simply proposes nothing
        rng.shuffle(found)
        per_kind.append(found)
    ordered: list[Corruption] = []
    while any(per_kind):
        for bucket in per_kind:
            if bucket:
                ordered.append(bucket.pop(0))
    return ordered
