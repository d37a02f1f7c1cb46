"""Evaluation harness: EX, VES, schema-linking P/R, Spider hardness, per-stage attribution, reports.

``route-sql eval`` (``route_graph.evaluation.cli.main``) runs it from the command line; in Python::

    from route_graph.evaluation import EvalSettings, run_eval
    result = run_eval(EvalSettings(data="spider", split="dev.json", limit=50), "runs/dev50")
    result.summary["overall"]["ex"]

Matplotlib and tqdm come with the ``eval`` extra (``pip install 'route-graph[eval]'``); without
them the report has no plots and progress is printed as plain lines.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# Names load on first use (PEP 562): ``finetune`` reads datasets and metrics from here, and an eager
# import of the runner would load the graph into training, which the layering forbids.
_LAZY = {
    "ablation_rows": "attribution", "cutoff_sql": "attribution", "stage_sqls": "attribution",
    "stage_table": "attribution",
    "Dataset": "datasets", "Example": "datasets", "load_dataset": "datasets",
    "HARDNESS_LEVELS": "hardness", "component_counts": "hardness", "spider_hardness": "hardness",
    "ExecutionScorer": "metrics", "ExOutcome": "metrics", "ScoringOptions": "metrics",
    "compare_results": "metrics", "gold_order_matters": "metrics", "results_match": "metrics",
    "ves_ratio": "metrics", "ves_reward": "metrics",
    "write_report": "report",
    "EvalSettings": "runner", "RunResult": "runner", "run_eval": "runner",
    "paired_comparison": "stats",
    "read_predictions": "summary", "summarize": "summary",
}

if TYPE_CHECKING:
    from route_graph.evaluation.attribution import ablation_rows, cutoff_sql, stage_sqls, stage_table
    from route_graph.evaluation.datasets import Dataset, Example, load_dataset
    from route_graph.evaluation.hardness import HARDNESS_LEVELS, component_counts, spider_hardness
    from route_graph.evaluation.metrics import (
        ExecutionScorer,
        ExOutcome,
        ScoringOptions,
        compare_results,
        gold_order_matters,
        results_match,
        ves_ratio,
        ves_reward,
    )
    from route_graph.evaluation.report import write_report
    from route_graph.evaluation.runner import EvalSettings, RunResult, run_eval
    from route_graph.evaluation.stats import paired_comparison
    from route_graph.evaluation.summary import read_predictions, summarize


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"route_graph.evaluation.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'route_graph.evaluation' has no attribute {name!r}")


__all__ = [
    "HARDNESS_LEVELS",
    "Dataset",
    "EvalSettings",
    "ExOutcome",
    "Example",
    "ExecutionScorer",
    "RunResult",
    "ScoringOptions",
    "ablation_rows",
    "compare_results",
    "component_counts",
    "cutoff_sql",
    "gold_order_matters",
    "load_dataset",
    "paired_comparison",
    "read_predictions",
    "results_match",
    "run_eval",
    "spider_hardness",
    "stage_sqls",
    "stage_table",
    "summarize",
    "ves_ratio",
    "ves_reward",
    "write_report",
]
