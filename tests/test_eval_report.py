"""report.md tables and the PNG plots, from a hand-made summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from route_graph.evaluation import report as report_module
from route_graph.evaluation.report import (
    markdown_table,
    pct,
    render_markdown,
    write_report,
)
from route_graph.evaluation.stats import (
    mcnemar_exact,
    paired_comparison,
    wilson_interval,
)

SUMMARY = {
    "settings": {"split": "valid.json", "mode": "mcp", "stages_effective": "sl,nc,cw"},
    "overall": {
        "questions": 10, "scored": 9, "correct": 6, "ex": 6 / 9, "ex_ci95": [0.35, 0.88], "executable": 8 / 9,
        "wrong": 2, "pred_errors": {"error": 1}, "graph_errors": 0, "gold_errors": 1, "gold_error_ids": [4],
        "truncated": 0, "fallbacks": 1,
    },
    "by_hardness": [{"hardness": "easy", "n": 5, "correct": 4, "ex": 0.8}, {"hardness": "extra", "n": 4, "correct": 2, "ex": 0.5}],
    "by_difficulty": None,
    "stages": [
        {"stage": "draft", "n": 9, "correct": 4, "ex": 4 / 9, "exec_errors": 2, "exec_error_rate": 2 / 9, "vs": None,
         "fixed": None, "broken": None, "changed": None, "ran": 9, "accepted": None},
        {"stage": "final", "n": 9, "correct": 6, "ex": 6 / 9, "exec_errors": 1, "exec_error_rate": 1 / 9, "vs": "draft",
         "fixed": 3, "broken": 1, "changed": 5, "ran": None, "accepted": None},
    ],
    "ablation": [
        {"variant": "single-pass", "checkpoint": "draft", "description": "one prompt", "n": 9, "correct": 4, "ex": 4 / 9, "executable": 7 / 9},
        {"variant": "+SL+NC+CW (full MCP)", "checkpoint": "final", "description": "all", "n": 9, "correct": 6, "ex": 6 / 9, "executable": 8 / 9},
    ],
    "comparison": {"a": "single-pass", "b": "+SL+NC+CW (full MCP)", "n": 9, "ex_a": 4 / 9, "ex_b": 6 / 9, "gain": 2 / 9,
                   "only_b": 3, "only_a": 1, "p_value": 0.625, "ci_low": -0.1, "ci_high": 0.5},
    "linking": {"n": 9, "table_precision": 0.9, "table_recall": 0.95, "column_precision": 0.6, "column_recall": 0.8,
                "strict_recall": 0.7, "columns_kept": 0.3},
    "cost": {"n": 10, "per_question": {"llm_calls": 4.5, "input_tokens": 3000.0, "output_tokens": 120.0, "seconds": 20.0, "wall_s": 21.0},
             "by_stage": {"schema_link": {"llm_calls": 2.0, "input_tokens": 1800.0, "output_tokens": 60.0, "seconds": 9.0, "ran": 10},
                          "generate": {"llm_calls": 1.0, "input_tokens": 600.0, "output_tokens": 30.0, "seconds": 5.0, "ran": 10}}},
    "ves": None,
    "throughput": [{"started": "2026-01-01T00:00:00", "questions": 10, "concurrency": 4, "wall_s": 60.0, "questions_per_min": 10.0}],
}


def test_markdown_has_every_section() -> None:
    text = render_markdown(SUMMARY, ["accuracy_by_hardness.png"])
    for heading in ("## Overall", "## EX by hardness", "## Ablation", "## Per-stage attribution", "## Schema linking",
                    "## Cost per question", "## Plots", "## Settings"):
        assert heading in text, heading
    assert "| EX (%) | 66.7 (95% CI 35.0–88.0) |" in text
    assert "| draft (single-pass, full schema) | 9 | 44.4 | 22.2 |" in text
    assert "exact McNemar p = 0.625" in text
    assert "| **total** | 10 | 4.50 | 3,000 | 120 | 20.00 |" in text
    assert "## EX by difficulty" not in text  # Spider data has none


def test_write_report_with_plots(tmp_path: Path) -> None:
    path = write_report(SUMMARY, tmp_path)
    assert path == tmp_path / "report.md"
    for name in ("accuracy_by_hardness.png", "accuracy_by_stage.png", "cost_by_stage.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000
        assert f"]({name})" in path.read_text()


def test_missing_matplotlib_is_a_note_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_matplotlib(*args, **kwargs):
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(report_module, "write_plots", no_matplotlib)
    text = write_report(SUMMARY, tmp_path).read_text()
    assert "Plots skipped: matplotlib is not installed" in text
    assert not list(tmp_path.glob("*.png"))


def test_helpers() -> None:
    assert pct(0.4567) == "45.7" and pct(None) == "–"
    assert markdown_table(["a"], [["x|y"]]).splitlines()[-1] == "| x\\|y |"


def test_stats() -> None:
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-3) and high == pytest.approx(0.7634, abs=1e-3)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(6, 0) == pytest.approx(2 / 64)
    same = paired_comparison([1, 2, 3], {1, 2}, {1, 2})
    assert (same.gain, same.only_a, same.only_b, same.p_value, same.ci_low, same.ci_high) == (0, 0, 0, 1.0, 0, 0)
