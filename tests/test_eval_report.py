"""report.md tables and the PNG plots, from a hand-made summary."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path

import pytest

from route_graph.evaluation import report as report_module
from route_graph.evaluation.report import (
    CI_PLOTS,
    ci_plot_data,
    markdown_table,
    model_label,
    pct,
    render_markdown,
    run_caption,
    write_ci_plots,
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


# --------------------------------------------------------------------------- plots with 95% CIs

PLOT_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "plot_ablation.py"


def _record(i: int, draft: bool, generate: bool, final: bool, hardness: str = "easy", status: str | None = None) -> dict:
    """A predictions.jsonl record of a full-MCP run whose draft / generate / final SQL is right or not."""
    sqls = {"draft": f"SELECT {i} -- draft", "generate": f"SELECT {i} -- generate", "final": f"SELECT {i} -- final"}
    ok = {"draft": draft, "generate": generate, "final": final}
    return {
        "id": i,
        "hardness": hardness,
        "status": status or ("correct" if final else "wrong"),
        "correct": final,
        "pred_sql": sqls["final"],
        "ex": {"executed": True, "correct": final},
        "stage_sql": {"draft": sqls["draft"], "generate": sqls["generate"], "noise_correct": sqls["generate"],
                      "continue_write": sqls["final"], "final": sqls["final"]},
        "executions": {sql: {"status": "correct" if ok[k] else "wrong", "correct": ok[k], "executed": True}
                       for k, sql in sqls.items()},
        "trace": [],
    }


def _records() -> list[dict]:
    """40 questions: draft right on 16, generate on 22, final on 26 (final fixes 12, breaks 2 vs draft)."""
    records = []
    for i in range(40):
        draft = i < 16
        generate = i < 14 or 20 <= i < 28
        final = i < 14 or 20 <= i < 32
        records.append(_record(i, draft, generate, final, hardness=("easy", "medium", "hard", "extra")[i % 4]))
    records.append(_record(99, True, True, True, status="gold_error"))  # left out everywhere
    return records


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def test_ci_plot_data_numbers_and_whiskers() -> None:
    data = ci_plot_data(_records())
    assert data["n"] == 40
    variants = {v["variant"]: v for v in data["variants"]}
    assert list(variants) == ["single prompt (MCP draft)", "+SL", "+SL+NC", "+SL+NC+CW (full MCP)"]
    assert (variants["single prompt (MCP draft)"]["correct"], variants["+SL"]["correct"],
            variants["+SL+NC+CW (full MCP)"]["correct"]) == (16, 22, 26)
    assert data["baseline"] == "single prompt (MCP draft)" and data["final"] == "+SL+NC+CW (full MCP)"
    for v in data["variants"] + data["hardness"]:
        assert v["ci_low"] < v["ex"] < v["ci_high"], v
        assert (v["ci_low"], v["ci_high"]) == pytest.approx(wilson_interval(v["correct"], v["n"]))
    diffs = {d["variant"]: d for d in data["differences"]}
    assert list(diffs) == ["+SL", "+SL+NC", "+SL+NC+CW (full MCP)"]
    full = diffs["+SL+NC+CW (full MCP)"]
    assert full["vs"] == "single prompt (MCP draft)"
    assert full["gain"] == pytest.approx(10 / 40) and (full["only_b"], full["only_a"]) == (12, 2)
    assert full["p_value"] == pytest.approx(mcnemar_exact(12, 2))
    assert full["ci_low"] > 0  # 12 fixed vs 2 broken out of 40: the interval excludes 0
    for d in data["differences"]:
        assert d["ci_low"] <= d["gain"] <= d["ci_high"] and d["ci_low"] < d["ci_high"], d
    assert {h["hardness"]: h["n"] for h in data["hardness"]} == {"easy": 10, "medium": 10, "hard": 10, "extra": 10}


def test_a_variant_identical_to_the_baseline_differs_by_zero() -> None:
    records = [_record(i, draft=i % 3 == 0, generate=i % 3 == 0, final=i % 3 == 0) for i in range(30)]
    data = ci_plot_data(records)
    assert len(data["differences"]) == 3
    for d in data["differences"]:
        assert (d["gain"], d["ci_low"], d["ci_high"], d["only_a"], d["only_b"], d["p_value"]) == (0, 0, 0, 0, 0, 1.0)


def test_ci_plots_are_small_valid_pngs(tmp_path: Path) -> None:
    names = write_ci_plots(ci_plot_data(_records()), tmp_path / "images", subtitle="spider_train/valid.json, n = 40",
                           footnote="Run: test", dpi=50)
    assert names == list(CI_PLOTS)
    for name in names:
        path = tmp_path / "images" / name
        width, height = _png_size(path)
        assert width == 400 and 100 < height < 400, (name, width, height)  # 8-inch wide figures at dpi 50
        assert 2_000 < path.stat().st_size < 100_000
    # nothing to compare with a single variant: no gain plot, but the bars are drawn
    only = {"variants": ci_plot_data(_records())["variants"][:1], "differences": [], "hardness": []}
    assert write_ci_plots(only, tmp_path / "one") == [CI_PLOTS[1]]


def test_ex_bars_whiskers_contain_the_bar() -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = ci_plot_data(_records())["variants"]
    fig, ax = plt.subplots()
    report_module._ex_bars(ax, [r["variant"] for r in rows], rows)
    heights = [bar.get_height() for bar in ax.patches]
    segments = ax.containers[-1].lines[2][0].get_segments()  # the error bars' vertical lines
    plt.close(fig)
    assert heights == pytest.approx([100 * r["ex"] for r in rows])
    for height, segment, row in zip(heights, segments, rows):
        (_, low), (_, high) = segment
        assert low < height < high
        assert (low, high) == pytest.approx((100 * row["ci_low"], 100 * row["ci_high"]))


def test_run_caption_says_data_set_n_seed_and_model() -> None:
    settings = {"data": "/work/shared/data/spider_train", "split": "valid.json", "limit": 400, "selected": 400,
                "sample_seed": 0, "model": "default"}
    caption = run_caption(settings, 160)
    # A record saying 'default' predates concrete records: it ran the untuned base, whatever the default is now.
    assert caption.startswith("spider_train/valid.json, seed-0 sample: n = 160 of 400 questions · "
                              "model: Qwen2.5-Coder-0.5B-Instruct")
    assert run_caption(settings, 400, sep="\n").startswith("spider_train/valid.json, seed-0 sample: n = 400 questions\nmodel: ")
    assert run_caption({"data": "/d/bird", "split": "dev.json", "model": "qwen2.5-coder-1.5b"}, 7) == (
        "bird/dev.json: n = 7 questions · model: Qwen2.5-Coder-1.5B-Instruct")
    assert model_label("openai:http://localhost:8000/v1#Qwen/Qwen2.5-Coder-7B-Instruct") == "Qwen/Qwen2.5-Coder-7B-Instruct"
    assert model_label("./merged-model/") == "merged-model"


def _plot_script():
    spec = importlib.util.spec_from_file_location("route_graph_plot_ablation", PLOT_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_plot_ablation_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "ablation" / "mcp"
    run.mkdir(parents=True)
    settings = {"data": "/x/spider_train", "split": "valid.json", "limit": 400, "selected": 400, "sample_seed": 0,
                "model": "default", "mode": "mcp", "stages_effective": "sl,nc,cw", "config_overrides": ["nc_verdict=false"]}
    (run / "run.json").write_text(json.dumps({"settings": settings}))
    lines = [json.dumps(r) for r in _records()]
    (run / "predictions.jsonl").write_text("\n".join(lines) + '\n{"id": 41, "torn')  # a run still writing
    before = sorted(p.name for p in run.iterdir())
    module = _plot_script()
    assert module.main([str(tmp_path / "ablation"), "--out", str(tmp_path / "images"), "--resamples", "500"]) == 0
    assert sorted(p.name for p in run.iterdir()) == before  # the run is only read
    for name in CI_PLOTS:
        _png_size(tmp_path / "images" / name)
    out = capsys.readouterr().out
    assert "n = 40 of 400 questions" in out and "Qwen2.5-Coder-0.5B-Instruct" in out
    assert "+SL+NC+CW (full MCP)         vs single prompt (MCP draft): 25.0 points" in out
    assert "![EX gain over the single prompt with paired 95% CIs](" in out and f"{CI_PLOTS[0]})" in out
    assert module.footnote(settings) == "Run: route-sql eval --mode mcp, stages sl,nc,cw, --set nc_verdict=false"
    with pytest.raises(SystemExit):
        module.main([str(run), "--out", str(run / "images")])
    with pytest.raises(SystemExit):
        module.main([str(tmp_path / "nothing")])
