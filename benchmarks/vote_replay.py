"""Replay the finalize vote of a stored run with today's ``vote_rank``, without running a model.

Each record's finalize trace keeps the vote's groups (stage names, size, empty or not) and each
candidate SQL's evaluation status is in ``executions``, so a change to how groups are ranked can be
scored on an existing run question by question: which answers it fixes and which it breaks.

    python benchmarks/vote_replay.py runs/ablation-400-r3 runs/ablation-400-1.5b
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from route_graph.graph.finalize import VOTE_CANDIDATES
from route_graph.results import vote_rank

STAGE_ORDER = [name for name, _ in VOTE_CANDIDATES]


def _predictions(run: Path) -> Path:
    for path in (run / "predictions.jsonl", run / "mcp" / "predictions.jsonl"):
        if path.is_file():
            return path
    raise SystemExit(
        f"No predictions.jsonl in {run} or {run / 'mcp'}: pass a run folder of route-sql eval / ablation.py."
    )


def _position(stage: str) -> int:
    # Samples come before the greedy stages in the vote's candidate order.
    return STAGE_ORDER.index(stage) + 1 if stage in STAGE_ORDER else 0


def replay(record: dict[str, Any]) -> bool | None:
    """Whether the replayed vote's answer is correct; None when the record has no vote to replay."""
    finalize = next(
        (t for t in record.get("trace", []) if t.get("stage") == "finalize"), None
    )
    vote = (finalize or {}).get("vote")
    if not vote:
        return None
    best = max(
        vote["groups"],
        key=lambda g: vote_rank(
            g["size"], g["empty"], max(_position(s) for s in g["stages"])
        ),
    )
    stage = max(best["stages"], key=_position)
    sql = record["stage_sql"].get(stage) if stage in STAGE_ORDER else None
    outcome = record.get("executions", {}).get(sql or "")
    if outcome is None:
        return None  # a sample won: its SQL is not stored per stage
    return bool(outcome.get("correct"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "runs",
        nargs="+",
        type=Path,
        help="run folders (with predictions.jsonl or mcp/predictions.jsonl)",
    )
    args = parser.parse_args(argv)
    print(
        "| run | questions | voted | EX as run (%) | EX replayed (%) | fixed | broken |"
    )
    print("|---|---|---|---|---|---|---|")
    for run in args.runs:
        records = [
            json.loads(line)
            for line in _predictions(run).read_text().splitlines()
            if line.strip()
        ]
        records = [r for r in records if r.get("status") != "gold_error"]
        voted = fixed = broken = correct = 0
        for record in records:
            replayed = replay(record)
            was = bool(record.get("correct"))
            now = was if replayed is None else replayed
            voted += replayed is not None
            fixed += now and not was
            broken += was and not now
            correct += now
        as_run = sum(bool(r.get("correct")) for r in records)
        n = max(len(records), 1)
        print(
            f"| {run} | {len(records)} | {voted} | {100 * as_run / n:.1f} | {100 * correct / n:.1f} | {fixed} | {broken} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
