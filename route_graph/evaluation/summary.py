"""Aggregate per-question records (predictions.jsonl) into the numbers a run reports (summary.json).

Kept apart from the runner so a summary can be recomputed from predictions alone, e.g. after
changing the report or merging runs: ``summarize(read_predictions(path), ...)``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from route_graph.evaluation.attribution import (
    ablation_rows,
    cost_summary,
    linking_summary,
    stage_table,
)
from route_graph.evaluation.hardness import HARDNESS_LEVELS
from route_graph.evaluation.stats import paired_comparison, wilson_interval

__all__ = ["bucket_table", "read_predictions", "summarize"]


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """Records of a predictions.jsonl file (a torn last line from a killed run is skipped)."""
    if not path.is_file():
        return []
    records = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def bucket_table(records: Sequence[Mapping[str, Any]], key: str, order: Iterable[str] = ()) -> list[dict[str, Any]]:
    """EX per value of ``key`` (e.g. hardness), in ``order`` first, then any other value."""
    scored = [r for r in records if r.get("status") != "gold_error"]
    counts: dict[str, list[int]] = {}
    for r in scored:
        bucket = counts.setdefault(str(r.get(key) or "unknown"), [0, 0])
        bucket[0] += 1
        bucket[1] += bool(r.get("correct"))
    order = list(order)
    keys = [k for k in order if k in counts] + sorted(k for k in counts if k not in order)
    return [{key: k, "n": counts[k][0], "correct": counts[k][1], "ex": counts[k][1] / counts[k][0]} for k in keys]


def _overall(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    scored = [r for r in records if r.get("status") != "gold_error"]
    correct = sum(bool(r.get("correct")) for r in scored)
    executed = sum(bool((r.get("ex") or {}).get("executed")) for r in scored)
    low, high = wilson_interval(correct, len(scored))
    errors = Counter((r.get("ex") or {}).get("error_kind") or "unknown" for r in scored if r.get("status") == "pred_error")
    return {
        "questions": len(records),
        "scored": len(scored),
        "correct": correct,
        "ex": correct / len(scored) if scored else None,
        "ex_ci95": [low, high],
        "executable": executed / len(scored) if scored else None,
        "wrong": sum(r.get("status") == "wrong" for r in scored),
        "pred_errors": dict(sorted(errors.items())),
        "graph_errors": sum(r.get("status") == "graph_error" for r in scored),
        "gold_errors": len(records) - len(scored),
        "gold_error_ids": [r["id"] for r in records if r.get("status") == "gold_error"],
        "truncated": sum(bool((r.get("ex") or {}).get("truncated")) for r in scored),
        "fallbacks": sum(bool(r.get("fallback")) for r in scored),
    }


def _ves(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    scored = [r for r in records if r.get("status") != "gold_error"]
    if not any(r.get("ves") is not None for r in scored):
        return None
    timed = [r for r in scored if r.get("ves") is not None]
    # BIRD: VES = 100 * mean over all questions of sqrt(time ratio), 0 for incorrect ones.
    return {
        "n": len(scored),
        "timed": len(timed),
        "ves": 100 * sum(float(r.get("ves") or 0.0) for r in scored) / len(scored),
    }


def _throughput(sessions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for s in sessions:
        questions, wall = int(s.get("questions") or 0), float(s.get("wall_s") or 0.0)
        rows.append(
            {
                **s,
                "questions_per_min": 60 * questions / wall if wall > 0 and questions else None,
                "seconds_per_question": wall / questions if questions else None,
            }
        )
    return rows


def summarize(
    records: Sequence[Mapping[str, Any]],
    *,
    settings: Mapping[str, Any] | None = None,
    sessions: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """All numbers of a run: EX overall / by hardness / by stage, ablation, SL P/R, cost, VES."""
    stages = str((settings or {}).get("stages_effective", "sl,nc,cw")).split(",")
    ablation = ablation_rows(records, stages)
    comparison = None
    if len(ablation) >= 2:
        first, last = ablation[0], ablation[-1]
        ids = [int(r["id"]) for r in records if r.get("status") != "gold_error"]
        comparison = {
            "a": first["variant"],
            "b": last["variant"],
            **paired_comparison(ids, set(first["correct_ids"]), set(last["correct_ids"])).to_dict(),
        }
    out = {
        "settings": dict(settings or {}),
        "overall": _overall(records),
        "by_hardness": bucket_table(records, "hardness", HARDNESS_LEVELS),
        "by_difficulty": bucket_table(records, "difficulty", ("simple", "moderate", "challenging"))
        if any(r.get("difficulty") for r in records)
        else None,
        "stages": stage_table(records),
        "ablation": [{k: v for k, v in row.items() if k != "correct_ids"} for row in ablation],
        "comparison": comparison,
        "linking": linking_summary(records),
        "cost": cost_summary(records),
        "ves": _ves(records),
        "throughput": _throughput(sessions),
    }
    return out
