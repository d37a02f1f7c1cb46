"""Per-stage attribution from synthetic predictions: inheritance, fixed/broken, cut-offs, cost."""

from __future__ import annotations

import pytest

from route_graph.evaluation.attribution import (
    ablation_rows,
    cost_summary,
    cutoff_sql,
    stage_sqls,
    stage_table,
)
from route_graph.evaluation.summary import summarize

# sql -> (executes, correct)
RESULTS = {
    "A": (True, False),
    "B": (True, True),
    "C": (False, False),
    "D": (True, False),
}


def record(rid: int, stages: dict[str, str], trace: list[dict] | None = None, *, status: str | None = None, cost=None) -> dict:
    """A predictions.jsonl record as the runner writes it (only the fields attribution reads)."""
    stage_sql = stage_sqls({k: v for k, v in stages.items() if k != "final"}, stages["final"])
    executions = {
        sql: {"executed": RESULTS[sql][0], "correct": RESULTS[sql][1]}
        for sql in set(stage_sql.values()) | {e.get("proposed_sql") for e in trace or () if e.get("proposed_sql")}
    }
    executed, correct = RESULTS[stages["final"]]
    return {
        "id": rid,
        "status": status or ("correct" if correct else "wrong" if executed else "pred_error"),
        "correct": None if status == "gold_error" else correct,
        "ex": {"executed": executed},
        "pred_sql": stages["final"],
        "stage_sql": stage_sql,
        "executions": executions,
        "trace": trace or [],
        "cost": cost or {},
        "cost_by_stage": {},
        "hardness": "easy",
    }


def test_stage_sqls_inherit_and_skip_absent_prefix() -> None:
    assert stage_sqls({"draft": "A", "generate": "B", "noise_correct": "B"}, "B") == {
        "draft": "A", "generate": "B", "noise_correct": "B", "continue_write": "B", "rescue": "B", "final": "B",
    }
    # no schema linking: no draft checkpoint at all
    assert stage_sqls({"generate": "A"}, "A") == {
        "generate": "A", "noise_correct": "A", "continue_write": "A", "rescue": "A", "final": "A",
    }


def test_fixed_broken_and_error_rates() -> None:
    records = [
        # NC fixes A -> B
        record(0, {"draft": "A", "generate": "A", "noise_correct": "B", "final": "B"}),
        # generate breaks B -> A, NC keeps it
        record(1, {"draft": "B", "generate": "A", "noise_correct": "A", "final": "A"}),
        # CW fixes a failing SQL
        record(2, {"draft": "C", "generate": "C", "noise_correct": "C", "continue_write": "B", "final": "B"},
               [{"stage": "continue_write", "proposed_sql": "B", "executed": True, "accepted": True}]),
        # CW breaks a correct answer
        record(3, {"draft": "B", "generate": "B", "noise_correct": "B", "continue_write": "D", "final": "D"},
               [{"stage": "continue_write", "proposed_sql": "D", "executed": True, "accepted": True}]),
        # gold failed: ignored everywhere
        record(4, {"draft": "B", "generate": "A", "noise_correct": "A", "final": "A"}, status="gold_error"),
    ]
    rows = {r["stage"]: r for r in stage_table(records)}
    assert list(rows) == ["draft", "generate", "noise_correct", "continue_write", "final"]
    assert all(r["n"] == 4 for r in rows.values())
    assert (rows["draft"]["correct"], rows["draft"]["fixed"]) == (2, None)
    assert (rows["generate"]["fixed"], rows["generate"]["broken"], rows["generate"]["correct"]) == (0, 1, 1)
    assert (rows["noise_correct"]["fixed"], rows["noise_correct"]["broken"], rows["noise_correct"]["changed"]) == (1, 0, 1)
    assert (rows["continue_write"]["fixed"], rows["continue_write"]["broken"]) == (1, 1)
    assert (rows["continue_write"]["ran"], rows["continue_write"]["accepted"]) == (2, 2)
    assert rows["draft"]["exec_error_rate"] == 0.25 and rows["continue_write"]["exec_error_rate"] == 0.0
    assert rows["final"]["correct"] == 2 and rows["final"]["changed"] == 0


def test_cutoff_applies_the_finalize_fallback() -> None:
    trace = [
        {"stage": "schema_link", "proposed_sql": "B", "executed": True},
        {"stage": "generate", "proposed_sql": "C", "executed": False},
        {"stage": "noise_correct", "proposed_sql": None},
        {"stage": "continue_write", "proposed_sql": "D", "executed": True, "accepted": True},
    ]
    r = record(0, {"draft": "B", "generate": "C", "noise_correct": "C", "continue_write": "D", "final": "D"}, trace)
    assert cutoff_sql(r, "draft") == "B"
    assert cutoff_sql(r, "generate") == "B"  # generation fails: a --stages sl run falls back to the draft
    assert cutoff_sql(r, "noise_correct") == "B"
    assert cutoff_sql(r, "continue_write") == "D"
    assert cutoff_sql(r, "final") == "D"
    rows = {row["checkpoint"]: row for row in ablation_rows([r])}
    assert [rows[k]["correct"] for k in ("draft", "generate", "noise_correct", "final")] == [1, 1, 1, 0]
    # the stage view shows the raw SQL instead: generate's failing SQL
    stage_rows = {row["stage"]: row for row in stage_table([r])}
    assert stage_rows["generate"]["exec_errors"] == 1 and stage_rows["generate"]["broken"] == 1


def test_ablation_plan_follows_enabled_stages() -> None:
    full = record(0, {"draft": "A", "generate": "B", "noise_correct": "B", "final": "B"})
    labels = [row["variant"] for row in ablation_rows([full])]
    assert labels == ["single-pass", "+SL", "+SL+NC", "+SL+NC+CW (full MCP)"]
    single = record(1, {"generate": "B", "final": "B"})
    rows = ablation_rows([single], stages=[])
    assert [(r["variant"], r["checkpoint"], r["ex"]) for r in rows] == [("single-pass", "generate", 1.0)]
    no_sl = ablation_rows([record(2, {"generate": "A", "noise_correct": "B", "final": "B"})], stages=["nc", "cw"])
    assert [r["variant"] for r in no_sl] == ["single-pass", "+NC", "+NC+CW"]


def test_rescue_splits_the_full_mcp_row_only_where_it_ran() -> None:
    rescued = record(
        0, {"draft": "C", "generate": "C", "noise_correct": "C", "continue_write": "C", "rescue": "B", "final": "B"},
        [{"stage": "rescue", "proposed_sql": "B", "executed": True, "accepted": True}],
    )
    plain = record(1, {"draft": "B", "generate": "B", "noise_correct": "B", "final": "B"})
    rows = ablation_rows([rescued, plain])
    assert [(r["variant"], r["checkpoint"], r["correct"]) for r in rows] == [
        ("single-pass", "draft", 1), ("+SL", "generate", 1), ("+SL+NC", "noise_correct", 1),
        ("+SL+NC+CW", "continue_write", 1), ("+SL+NC+CW+rescue (full MCP)", "final", 2),
    ]
    stage_rows = {r["stage"]: r for r in stage_table([rescued, plain])}
    assert (stage_rows["rescue"]["fixed"], stage_rows["rescue"]["broken"]) == (1, 0)
    assert (stage_rows["rescue"]["ran"], stage_rows["rescue"]["accepted"]) == (1, 1)
    # a run without a rescue entry shows neither the row nor the split
    assert "rescue" not in {r["stage"] for r in stage_table([plain])}
    assert [r["variant"] for r in ablation_rows([plain])][-1] == "+SL+NC+CW (full MCP)"


def test_graph_errors_count_as_wrong_everywhere() -> None:
    ok = record(0, {"draft": "B", "generate": "B", "noise_correct": "B", "final": "B"})
    crashed = {"id": 1, "status": "graph_error", "correct": False, "ex": {"executed": False},
               "pred_sql": "", "stage_sql": {"final": ""}, "executions": {}, "trace": []}
    rows = {r["stage"]: r for r in stage_table([ok, crashed])}
    assert rows["draft"]["n"] == 2 and rows["draft"]["correct"] == 1 and rows["draft"]["exec_errors"] == 1
    assert [r["ex"] for r in ablation_rows([ok, crashed])] == [0.5, 0.5, 0.5, 0.5]


def test_cost_summary_means_over_all_questions() -> None:
    a = record(0, {"generate": "B", "final": "B"}, cost={"llm_calls": 3, "input_tokens": 300, "output_tokens": 30, "seconds": 3.0})
    a["cost_by_stage"] = {"generate": {"llm_calls": 1, "input_tokens": 100, "output_tokens": 10, "seconds": 1.0},
                          "continue_write": {"llm_calls": 2, "input_tokens": 200, "output_tokens": 20, "seconds": 2.0}}
    a["wall_s"] = 4.0
    b = record(1, {"generate": "B", "final": "B"}, cost={"llm_calls": 1, "input_tokens": 100, "output_tokens": 10, "seconds": 1.0})
    b["cost_by_stage"] = {"generate": {"llm_calls": 1, "input_tokens": 100, "output_tokens": 10, "seconds": 1.0}}
    b["wall_s"] = 2.0
    cost = cost_summary([a, b])
    assert cost["per_question"] == {"llm_calls": 2.0, "input_tokens": 200.0, "output_tokens": 20.0, "seconds": 2.0, "wall_s": 3.0}
    assert cost["by_stage"]["generate"]["llm_calls"] == 1.0 and cost["by_stage"]["generate"]["ran"] == 2
    assert cost["by_stage"]["continue_write"] == pytest.approx(
        {"llm_calls": 1.0, "input_tokens": 100.0, "output_tokens": 10.0, "seconds": 1.0, "ran": 1}
    )
    total = sum(stage["llm_calls"] for stage in cost["by_stage"].values())
    assert total == cost["per_question"]["llm_calls"]


def test_summary_compares_first_and_last_variant() -> None:
    records = [
        record(i, {"draft": "A", "generate": "A", "noise_correct": "B", "final": "B"}) for i in range(8)
    ] + [record(8, {"draft": "B", "generate": "B", "noise_correct": "A", "final": "A"})]
    summary = summarize(records, settings={"stages_effective": "sl,nc,cw"})
    comparison = summary["comparison"]
    assert (comparison["only_b"], comparison["only_a"]) == (8, 1)
    assert comparison["gain"] == pytest.approx(7 / 9)
    assert comparison["p_value"] == pytest.approx(2 * 10 / 512)
    assert comparison["ci_low"] > 0
    assert summary["overall"]["ex"] == pytest.approx(8 / 9)
    assert summary["by_hardness"] == [{"hardness": "easy", "n": 9, "correct": 8, "ex": pytest.approx(8 / 9)}]
