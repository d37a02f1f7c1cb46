"""Spider's hardness buckets (easy / medium / hard / extra), computed with sqlglot.

Spider's ``evaluation.py`` counts three things on the parsed gold query and buckets them:

* component 1: WHERE, GROUP BY, ORDER BY, LIMIT (1 each), JOIN (tables in FROM - 1), and every OR
  and LIKE among the join, WHERE and HAVING conditions;
* component 2: nested queries, i.e. subqueries used as condition values plus INTERSECT / UNION /
  EXCEPT;
* others: one each for more than one aggregate, more than one SELECT item, more than one WHERE
  condition, more than one GROUP BY column.

Like the official script, only the left-most SELECT of a set operation is counted, subqueries
are not looked into, and aggregates are counted in SELECT, GROUP BY and ORDER BY, while in WHERE
and HAVING the script's ``has_agg`` looks at the condition's NOT flag instead (so ``NOT IN`` /
``NOT LIKE`` conditions count as "aggregates" there). We reproduce that quirk so that our buckets
match the published per-question labels. BIRD ships its own ``difficulty`` label, which the
runner reports next to these buckets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

__all__ = ["HARDNESS_LEVELS", "ComponentCounts", "Hardness", "classify", "component_counts", "spider_hardness"]

Hardness = Literal["easy", "medium", "hard", "extra"]
HARDNESS_LEVELS: tuple[Hardness, ...] = ("easy", "medium", "hard", "extra")

_QUERY = (exp.Select, exp.SetOperation)
_ARITH = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.DPipe)


@dataclass(frozen=True)
class ComponentCounts:
    """Spider's three counts for one query."""

    component1: int
    component2: int
    others: int


def classify(counts: ComponentCounts) -> Hardness:
    """Spider's ``eval_hardness`` thresholds."""
    c1, c2, other = counts.component1, counts.component2, counts.others
    if c1 <= 1 and other == 0 and c2 == 0:
        return "easy"
    if (other <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and other < 2 and c2 == 0):
        return "medium"
    if (
        (other > 2 and c1 <= 2 and c2 == 0)
        or (2 < c1 <= 3 and other <= 2 and c2 == 0)
        or (c1 <= 1 and other == 0 and c2 <= 1)
    ):
        return "hard"
    return "extra"


def _unwrap(node: exp.Expression) -> exp.Expression:
    while isinstance(node, (exp.Paren, exp.Subquery)) and isinstance(node.this, exp.Expression):
        node = node.this
    return node


def _conditions(node: exp.Expression | None) -> tuple[list[exp.Expression], int]:
    """Flatten an AND/OR tree into Spider's condition units; also return the number of ORs."""
    if node is None:
        return [], 0
    node = node.this if isinstance(node, (exp.Where, exp.Having)) else node
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, (exp.And, exp.Or)):
        left, left_ors = _conditions(node.left)
        right, right_ors = _conditions(node.right)
        return left + right, left_ors + right_ors + isinstance(node, exp.Or)
    return [node], 0


def _nested_queries(leaf: exp.Expression) -> int:
    """Subqueries directly used by one condition (not those nested inside them)."""
    count = 0
    for node in leaf.find_all(*_QUERY):
        parent = node.parent
        while parent is not None and parent is not leaf and not isinstance(parent, _QUERY):
            parent = parent.parent
        if parent is None or parent is leaf:
            count += 1
    return count


def _is_agg(node: exp.Expression | None) -> bool:
    return node is not None and isinstance(_unwrap(node), exp.AggFunc)


def _leftmost(node: exp.Expression) -> exp.Expression:
    node = _unwrap(node)
    while isinstance(node, _ARITH):
        node = _unwrap(node.left)
    return node


def _select_aggs(select: exp.Select) -> int:
    """SELECT items whose Spider ``agg_id`` is set: an aggregate leads the item."""
    return sum(isinstance(_leftmost(item.unalias()), exp.AggFunc) for item in select.expressions)


def _order_aggs(order: exp.Order | None) -> int:
    """Aggregates in the one or two column units of each ORDER BY item."""
    if order is None:
        return 0
    total = 0
    for item in order.expressions:
        value = _unwrap(item.this if isinstance(item, exp.Ordered) else item)
        if isinstance(value, _ARITH):
            total += _is_agg(value.left) + _is_agg(value.right)
        else:
            total += _is_agg(value)
    return total


def _negated(leaves: list[exp.Expression]) -> int:
    """Conditions with Spider's ``not_op`` (NOT IN / NOT LIKE / NOT BETWEEN; not IS NOT NULL)."""
    return sum(isinstance(leaf, exp.Not) and not isinstance(leaf.this, exp.Is) for leaf in leaves)


def _is_like(leaf: exp.Expression) -> bool:
    inner = leaf.this if isinstance(leaf, exp.Not) else leaf
    return isinstance(inner, (exp.Like, exp.ILike))


def component_counts(sql: str, dialect: str = "sqlite") -> ComponentCounts | None:
    """Spider's component counts of ``sql``; None when it does not parse as a query."""
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except (SqlglotError, ValueError, RecursionError):
        return None
    if tree is None:
        return None
    root = _unwrap(tree)
    component2 = 0
    if isinstance(root, exp.SetOperation):
        component2 += 1
        while isinstance(root, exp.SetOperation):
            root = _unwrap(root.this)
    if not isinstance(root, exp.Select):
        return None
    select = root
    joins = select.args.get("joins") or []
    join_leaves: list[exp.Expression] = []
    join_ors = 0
    for join in joins:
        leaves, ors = _conditions(join.args.get("on"))
        join_leaves += leaves
        join_ors += ors
    where_leaves, where_ors = _conditions(select.args.get("where"))
    having_leaves, having_ors = _conditions(select.args.get("having"))
    all_leaves = join_leaves + where_leaves + having_leaves
    group = select.args.get("group")
    group_items = list(group.expressions) if group is not None else []
    order = select.args.get("order")

    component1 = sum(
        1
        for clause in ("where", "group", "order", "limit")
        if select.args.get(clause) is not None
    )
    component1 += len(joins)  # tables in FROM - 1
    component1 += join_ors + where_ors + having_ors
    component1 += sum(_is_like(leaf) for leaf in all_leaves)
    component2 += sum(_nested_queries(leaf) for leaf in all_leaves)

    aggregates = (
        _select_aggs(select)
        + _negated(where_leaves)
        + sum(_is_agg(g) for g in group_items)
        + _order_aggs(order)
        + _negated(having_leaves)
    )
    others = (
        (aggregates > 1)
        + (len(select.expressions) > 1)
        + (len(where_leaves) > 1)
        + (len(group_items) > 1)
    )
    return ComponentCounts(component1=component1, component2=component2, others=int(others))


def spider_hardness(sql: str, dialect: str = "sqlite") -> Hardness | None:
    """Spider's hardness bucket of a (gold) query; None when it does not parse."""
    counts = component_counts(sql, dialect)
    return classify(counts) if counts is not None else None
