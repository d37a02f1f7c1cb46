"""Would the NC verdict pay? A model's verdicts on the SQL a stored full-MCP run sent to noise correction.

Why: a full-MCP run with ``--set nc_verdict=true`` costs ~50 min for 400 questions on 2 cores, and
its EX moves with every stage. The verdict's own effect is one model call per question: for each
question of a stored run (``benchmarks/ablation.py`` output) whose generate-stage SQL executes and
returns rows (what the verdict judges; failing or empty SQL goes to ``nc_repair`` instead), ask
``--model`` the graph's NC verdict prompt on that SQL (same messages, prefill and parser as
``route_graph.graph.noise_correct``), execute a proposed fix as the graph would (taken only if it
executes) and score both with the evaluation's scorer. The net effect the verdict would have on
EX at that stage is fixed − broken; the graph's later stages (CW, rescue, vote) are not replayed.

    python benchmarks/nc_verdict_check.py --run benchmarks/runs/ablation-400-phase2a/mcp \\
        --model 'qwen2.5-coder-0.5b+finetune/phases/3a-msft-part1' --out benchmarks/runs/nc-verdict-3a
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from finetune.data.mining import ask_prefilled
from route_graph.evaluation.datasets import load_dataset
from route_graph.evaluation.metrics import ExecutionScorer
from route_graph.evaluation.summary import read_predictions
from route_graph.graph.context import RouteConfig
from route_graph.sql.execute import execute_sql
from route_graph.sql.opening import open_database
from route_graph.views import (
    execution_feedback,
    full_schema_text,
    parsing,
    repair_problem,
    stage_messages,
    stage_prefill,
)

__all__ = ["main"]


def check(args: argparse.Namespace) -> dict[str, Any]:
    """Ask the verdicts (resuming from ``--out``'s checks.jsonl) and return the summary."""
    from route_graph import load_chat_model

    run_dir = Path(args.run)
    records = sorted(read_predictions(run_dir / "predictions.jsonl"), key=lambda r: r["id"])[: args.limit]
    dataset = load_dataset(args.data, args.split)
    view = RouteConfig().view()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checks_path = out / "checks.jsonl"
    done = {json.loads(line)["id"] for line in checks_path.read_text().splitlines()} if checks_path.is_file() else set()
    llm = load_chat_model(args.model)
    dbs: dict[str, Any] = {}
    with checks_path.open("a", encoding="utf-8") as log:
        for record in records:
            if record["id"] in done:
                continue
            start = time.perf_counter()
            db = dbs.setdefault(record["db_id"], open_database(dataset.db_path(record["db_id"])))
            sql = (record.get("stage_sql") or {}).get("generate") or ""
            result = execute_sql(db, sql, timeout_s=view.execution_timeout_s, max_rows=view.max_rows)
            row: dict[str, Any] = {"id": record["id"], "sql": sql}
            if not sql or repair_problem(result) is not None:
                row["outcome"] = "not judged (nc_repair's case)"
            else:
                scorer = ExecutionScorer(db, record["gold_sql"])
                msgs = stage_messages("nc", record["question"], db, view, hint=record.get("hint"), sql=sql,
                                      feedback=execution_feedback(result, view), full_text=full_schema_text(db, view))
                answer = ask_prefilled(llm, [msgs], stage_prefill("nc", view))[0]
                verdict = parsing.parse_verdict(str(answer), sql)
                before = scorer.score(sql).correct
                row.update(answer=str(answer), verdict={True: "correct", False: "incorrect", None: "unclear"}[verdict.correct],
                           before=before, proposed=verdict.sql)
                after = before
                if verdict.correct is False and verdict.sql:
                    fixed = execute_sql(db, verdict.sql, timeout_s=view.execution_timeout_s, max_rows=view.max_rows)
                    row["fix_executes"] = fixed.ok
                    if fixed.ok:
                        after = scorer.score(verdict.sql).correct
                row["after"] = after
                row["outcome"] = ("fixed" if after and not before else "broken" if before and not after
                                  else "kept right" if before else "left wrong")
            row["seconds"] = round(time.perf_counter() - start, 2)
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(f"#{record['id']}: {row['outcome']} ({row.get('verdict', '-')}) {row['seconds']} s", flush=True)
    rows = [json.loads(line) for line in checks_path.read_text().splitlines()]
    judged = [r for r in rows if "verdict" in r]
    summary = {
        "run": str(run_dir), "model": args.model, "questions": len(rows), "judged": len(judged),
        "verdicts": dict(Counter(r["verdict"] for r in judged)),
        "verdicts_on_right_sql": dict(Counter(r["verdict"] for r in judged if r["before"])),
        "verdicts_on_wrong_sql": dict(Counter(r["verdict"] for r in judged if not r["before"])),
        "outcomes": dict(Counter(r["outcome"] for r in rows)),
        "net_ex_points": round(100 * (sum(r["outcome"] == "fixed" for r in rows) - sum(r["outcome"] == "broken" for r in rows)) / max(1, len(rows)), 2),
        "seconds_per_judged": round(sum(r["seconds"] for r in judged) / max(1, len(judged)), 2),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a stored full-MCP run folder (predictions.jsonl)")
    p.add_argument("--model", required=True, help="model spec whose NC verdict is checked")
    p.add_argument("--out", required=True, help="folder for checks.jsonl (resumable) and summary.json")
    p.add_argument("--data", default=None, help="data folder (default: $ROUTE_GRAPH_DATA/spider_train)")
    p.add_argument("--split", default="valid.json")
    p.add_argument("--limit", type=int, default=None, help="first N questions of the run (by id)")
    args = p.parse_args(argv)
    if args.data is None:
        import os

        args.data = str(Path(os.environ.get("ROUTE_GRAPH_DATA", REPO_ROOT.parent / "shared" / "data")) / "spider_train")
    print(json.dumps(check(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
