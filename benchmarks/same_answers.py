"""Does a refactor leave the pipeline's answers unchanged? Two runs of the same model, question by question.

Greedy decoding on the same engine makes a run reproducible, so a change that should not change
behaviour (issue 28's restructuring) must give every question of a new run the same final SQL, the
same SQL at every stage, the same schema links, the same verdict and the same number of model
calls and tokens as the stored run. The new run may cover a subset of the stored one's questions
(``--limit 100 --sample-seed 0`` picks a subset of the 400 standard questions)::

    route-sql eval --data ../shared/data/spider_train --split valid.json --limit 100 --sample-seed 0 \\
        --out runs/same-100 --no-progress
    python benchmarks/same_answers.py --stored benchmarks/runs/ablation-400-base-prefill/mcp --new runs/same-100

Prints one line per question that differs (what differs) and a Markdown summary; exits 1 when
any question differs, so it can gate a merge.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["compare_runs", "main"]

#: What must match, per question: name -> how to read it from a predictions.jsonl record.
FIELDS = {
    "final SQL": lambda r: r.get("pred_sql"),
    "stage SQL": lambda r: r.get("stage_sql"),
    "links": lambda r: r.get("links"),
    "verdict": lambda r: r.get("status"),
    "winner": lambda r: r.get("winner"),
    "calls": lambda r: (r.get("cost") or {}).get("llm_calls"),
    "tokens": lambda r: ((r.get("cost") or {}).get("input_tokens"), (r.get("cost") or {}).get("output_tokens")),
}


def _records(run: Path) -> dict[Any, dict[str, Any]]:
    path = run / "predictions.jsonl" if run.is_dir() else run
    if not path.is_file():
        raise SystemExit(f"{path}: no predictions.jsonl; pass a run directory (route-sql eval --out, or an ablation's mcp/).")
    with path.open(encoding="utf-8") as handle:
        return {r["id"]: r for r in map(json.loads, filter(str.strip, handle))}


def compare_runs(stored: Path, new: Path) -> tuple[int, list[tuple[Any, list[str]]]]:
    """(questions compared, [(id, [fields that differ])]) over the new run's questions."""
    old, fresh = _records(stored), _records(new)
    missing = sorted(set(fresh) - set(old))
    if missing:
        raise SystemExit(f"{len(missing)} questions of {new} are not in {stored} (ids {missing[:5]}...): not the same sample.")
    diffs = []
    for qid in sorted(fresh):
        differ = [name for name, read in FIELDS.items() if read(old[qid]) != read(fresh[qid])]
        if differ:
            diffs.append((qid, differ))
    return len(fresh), diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stored", type=Path, required=True, help="the reference run directory")
    parser.add_argument("--new", type=Path, required=True, help="the run to check (a subset of the stored questions)")
    args = parser.parse_args(argv)
    compared, diffs = compare_runs(args.stored, args.new)
    old, fresh = _records(args.stored), _records(args.new)
    for qid, differ in diffs:
        print(f"question {qid} ({fresh[qid]['db_id']}): {', '.join(differ)} differ; "
              f"stored {old[qid].get('pred_sql')!r} ({old[qid].get('status')}) vs new {fresh[qid].get('pred_sql')!r} ({fresh[qid].get('status')})")
    same_verdict = sum(old[q]["status"] == fresh[q]["status"] for q in fresh)
    print(f"\n| questions | identical in every field | same verdict | stored EX | new EX |\n| --- | --- | --- | --- | --- |\n"
          f"| {compared} | {compared - len(diffs)} | {same_verdict} | "
          f"{sum(bool(old[q].get('correct')) for q in fresh)} | {sum(bool(fresh[q].get('correct')) for q in fresh)} |")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
