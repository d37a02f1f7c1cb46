"""Link noise: how many unneeded tables the generate prompt shows, and whether the model joins them.

Why: the tuned models' generate stage beat the base's while their full MCP tied it, and what was
left were answers that execute and are wrong. This measures one cause without a model call:
for each question of stored full-MCP runs (``benchmarks/ablation.py`` output), the tables the
generate prompt showed (the run's final ``links``, after recall-first expansion) that the gold
SQL does not use, and whether the generate-stage SQL uses such a table (an over-join). With
``--records`` it gives the same count for the linked-view TS records a training run made, so the
two distributions can be compared: training on prompts that hold only the needed tables teaches
a model to use every table it is shown.

    python benchmarks/link_noise.py --run benchmarks/runs/ablation-400-base-prefill \\
        --run benchmarks/runs/ablation-400-phase2a --records outputs/phase2a_ts_linked_part1/data/records.jsonl
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

import sqlglot
from sqlglot import exp

from route_graph.evaluation.summary import read_predictions
from route_graph.views import parsing

BUCKETS = ("0", "1", "2", "3+")
# The linked-view TS prompts render the schema as DDL (route_graph.rendering).
_DDL_TABLE = re.compile(r'CREATE TABLE\s+[`"\[]?([^\s`"\](]+)')


def sql_tables(sql: str | None) -> set[str] | None:
    """The table names ``sql`` reads (lower case), or None when sqlglot cannot parse it."""
    if not sql:
        return set()
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except sqlglot.errors.ParseError:
        return None
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    return {t.name.lower() for t in tree.find_all(exp.Table) if t.name and t.name.lower() not in ctes}


def _bucket(count: int) -> str:
    return BUCKETS[min(count, 3)]


def run_noise(run_dir: Path) -> dict[str, object]:
    """Unneeded-table counts and over-joins of one stored run's generate stage."""
    folder = run_dir / "mcp" if (run_dir / "mcp" / "predictions.jsonl").is_file() else run_dir
    rows = read_predictions(folder / "predictions.jsonl")
    buckets: Counter[str] = Counter()
    counts = Counter()
    for row in rows:
        shown = {t.lower() for t in row.get("links") or {}}
        gold = sql_tables(row.get("gold_sql"))
        if not shown or gold is None:
            counts["no links or unparsed gold"] += 1
            continue
        unneeded = shown - gold
        buckets[_bucket(len(unneeded))] += 1
        counts["missing a gold table"] += bool(gold - shown)
        generated = sql_tables((row.get("stage_sql") or {}).get("generate"))
        if unneeded:
            counts["with unneeded tables"] += 1
            counts["over-joins"] += bool(generated and generated & unneeded)
    measured = sum(buckets.values())
    return {
        "run": str(run_dir), "questions": len(rows), "measured": measured,
        "share": {b: buckets[b] / measured for b in BUCKETS} if measured else {},
        "missing": counts["missing a gold table"], "with_unneeded": counts["with unneeded tables"],
        "over_joins": counts["over-joins"],
    }


def records_noise(path: Path) -> dict[str, object]:
    """Unneeded-table counts of the linked-view TS records of a training run's records file."""
    from finetune.data.records import read_jsonl

    buckets: Counter[str] = Counter()
    for record in read_jsonl(path):
        if record.task != "ts" or record.variant != "linked_schema":
            continue
        shown = {name.lower() for name in _DDL_TABLE.findall(record.prompt[-1]["content"])}
        gold = sql_tables(parsing.parse_sql(record.answer))
        if gold is None:
            continue
        buckets[_bucket(len(shown - gold))] += 1
    measured = sum(buckets.values())
    return {"records": str(path), "measured": measured, "share": {b: buckets[b] / measured for b in BUCKETS} if measured else {}}


def report(runs: list[dict[str, object]], records: list[dict[str, object]]) -> str:
    lines = [
        "| source | measured | unneeded tables shown: 0 / 1 / 2 / 3+ (%) | gold table missing | generate over-joins (of questions with unneeded tables) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for item in runs:
        share = " / ".join(f"{100 * item['share'].get(b, 0):.0f}" for b in BUCKETS)
        with_unneeded = item["with_unneeded"] or 1
        lines.append(
            f"| `{item['run']}` | {item['measured']} | {share} | {item['missing']} | "
            f"{item['over_joins']} of {item['with_unneeded']} ({100 * item['over_joins'] / with_unneeded:.0f}%) |"
        )
    for item in records:
        share = " / ".join(f"{100 * item['share'].get(b, 0):.0f}" for b in BUCKETS)
        lines.append(f"| `{item['records']}` (training, linked TS) | {item['measured']} | {share} | – | – |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", default=[], type=Path, help="A stored run folder (repeatable).")
    parser.add_argument("--records", action="append", default=[], type=Path, help="A training records JSONL (repeatable).")
    args = parser.parse_args(argv)
    if not args.run and not args.records:
        parser.error("give at least one --run or --records")
    print(report([run_noise(p) for p in args.run], [records_noise(p) for p in args.records]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
