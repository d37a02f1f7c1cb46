"""The human-readable side of a run: report.md with tables, and matplotlib PNG plots.

Plots use the Agg backend (files only, never a display) and are skipped with a note in the report
when matplotlib is not installed (``pip install 'route-graph[eval]'``).
"""

from __future__ import annotations

import os

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["append_section", "markdown_table", "pct", "render_markdown", "write_plots", "write_report"]

_STAGE_LABELS = {
    "draft": "draft (single-pass, full schema)",
    "generate": "generate",
    "noise_correct": "noise_correct",
    "continue_write": "continue_write",
    "final": "final answer",
}


def pct(value: float | None, digits: int = 1) -> str:
    """0.4567 -> '45.7' (no % sign, for table cells); None -> '–'."""
    return "–" if value is None else f"{100 * value:.{digits}f}"


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def append_section(section: str, results: str | os.PathLike[str] | None) -> None:
    """Print a benchmark's Markdown section and, given a results file, append it there too."""
    if results:
        with open(results, "a", encoding="utf-8") as handle:
            handle.write("\n" + section)
    print(section)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (cells converted with str, '|' escaped)."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _overall_section(summary: Mapping[str, Any]) -> list[str]:
    o = summary["overall"]
    low, high = o.get("ex_ci95") or (None, None)
    errors = ", ".join(f"{k}: {v}" for k, v in (o.get("pred_errors") or {}).items()) or "none"
    rows = [
        ("questions", o["questions"]),
        ("scored (gold executes)", o["scored"]),
        ("EX (%)", f"{pct(o['ex'])} (95% CI {pct(low)}–{pct(high)})"),
        ("executable (%)", pct(o["executable"])),
        ("wrong result", o["wrong"]),
        ("prediction failed to execute", errors),
        ("graph errors", o["graph_errors"]),
        ("gold errors (not counted)", f"{o['gold_errors']}" + (f" (ids {o['gold_error_ids'][:10]})" if o["gold_errors"] else "")),
        ("results cut at max_rows", o["truncated"]),
        ("finalize fell back to an earlier SQL", o["fallbacks"]),
    ]
    if summary.get("ves"):
        rows.append(("VES", f"{summary['ves']['ves']:.2f} ({summary['ves']['timed']} timed)"))
    return ["## Overall", "", markdown_table(["metric", "value"], rows), ""]


def _bucket_section(title: str, rows: Sequence[Mapping[str, Any]], key: str) -> list[str]:
    if not rows:
        return []
    table = markdown_table([key, "n", "correct", "EX (%)"], [(r[key], r["n"], r["correct"], pct(r["ex"])) for r in rows])
    return [f"## {title}", "", table, ""]


def _stage_section(summary: Mapping[str, Any]) -> list[str]:
    rows = summary.get("stages") or []
    if not rows:
        return []
    table = markdown_table(
        ["after stage", "n", "EX (%)", "exec errors (%)", "ran", "accepted", "changed SQL", "fixed", "broken"],
        [
            (
                _STAGE_LABELS.get(r["stage"], r["stage"]),
                r["n"],
                pct(r["ex"]),
                pct(r["exec_error_rate"]),
                _num(r["ran"]),
                _num(r["accepted"]),
                _num(r["changed"]),
                _num(r["fixed"]),
                _num(r["broken"]),
            )
            for r in rows
        ],
    )
    return [
        "## Per-stage attribution",
        "",
        ("EX of the SQL as it stands after each stage (a stage that did not run keeps the previous SQL); "
         "fixed / broken count answers that went wrong→right / right→wrong against the row above."),
        "",
        table,
        "",
    ]


def _ablation_section(summary: Mapping[str, Any]) -> list[str]:
    rows = summary.get("ablation") or []
    if not rows:
        return []
    table = markdown_table(
        ["variant", "EX (%)", "executable (%)", "n", "what it is"],
        [(r["variant"], pct(r["ex"]), pct(r["executable"]), r["n"], r["description"]) for r in rows],
    )
    lines = [
        "## Ablation (cumulative, from this run)",
        "",
        ("Each row is the answer a pipeline stopped after that stage would give (its SQL, or the "
         "latest earlier executable one if it fails, as the finalize step does)."),
        "",
        table,
        "",
    ]
    c = summary.get("comparison")
    if c:
        lines += [
            (f"{c['b']} vs {c['a']}: EX gain {pct(c['gain'])} points (paired bootstrap 95% CI "
             f"{pct(c['ci_low'])} to {pct(c['ci_high'])}); {c['only_b']} questions only {c['b']} "
             f"answers, {c['only_a']} only {c['a']}; exact McNemar p = {c['p_value']:.3g}."),
            "",
        ]
    return lines


def _linking_section(summary: Mapping[str, Any]) -> list[str]:
    link = summary.get("linking")
    if not link:
        return []
    table = markdown_table(
        ["n", "table P", "table R", "column P", "column R", "strict recall", "columns kept"],
        [
            (
                link["n"],
                pct(link["table_precision"]),
                pct(link["table_recall"]),
                pct(link["column_precision"]),
                pct(link["column_recall"]),
                pct(link["strict_recall"]),
                pct(link["columns_kept"]),
            )
        ],
    )
    return [
        "## Schema linking",
        "",
        ("Reduced schema vs the tables/columns the gold SQL uses (sqlglot, aliases resolved), in %. "
         "Strict recall: every gold item kept. Columns kept: share of the database's columns."),
        "",
        table,
        "",
    ]


def _cost_section(summary: Mapping[str, Any]) -> list[str]:
    cost = summary.get("cost") or {}
    if not cost.get("n"):
        return []
    pq = cost["per_question"]
    rows = [
        (stage, _num(c.get("ran")), _num(c["llm_calls"], 2), _num(c["input_tokens"], 0), _num(c["output_tokens"], 0), _num(c["seconds"], 2))
        for stage, c in cost["by_stage"].items()
    ]
    rows.append(("**total**", cost["n"], _num(pq["llm_calls"], 2), _num(pq["input_tokens"], 0), _num(pq["output_tokens"], 0), _num(pq["seconds"], 2)))
    lines = [
        "## Cost per question",
        "",
        ("Means over all questions (a stage that did not run costs 0); seconds are model+execution "
         f"time inside the graph. Wall time per question: {_num(pq.get('wall_s'), 2)} s."),
        "",
        markdown_table(["stage", "ran", "LLM calls", "input tokens", "output tokens", "seconds"], rows),
        "",
    ]
    sessions = summary.get("throughput") or []
    if sessions:
        lines += [
            "Throughput per session (this command's wall clock):",
            "",
            markdown_table(
                ["started", "questions", "concurrency", "wall (s)", "questions/min"],
                [
                    (s.get("started", ""), s.get("questions"), s.get("concurrency"), _num(s.get("wall_s"), 1), _num(s.get("questions_per_min"), 2))
                    for s in sessions
                ],
            ),
            "",
        ]
    return lines


def _settings_section(summary: Mapping[str, Any]) -> list[str]:
    settings = summary.get("settings") or {}
    if not settings:
        return []
    rows = [(k, f"`{v}`") for k, v in settings.items()]
    return ["## Settings", "", markdown_table(["setting", "value"], rows), ""]


def render_markdown(summary: Mapping[str, Any], plots: Sequence[str] = (), plot_note: str | None = None) -> str:
    """report.md text for a summary (``plots`` = PNG file names next to the report)."""
    settings = summary.get("settings") or {}
    title = f"# Evaluation: {settings.get('split', 'dataset')} ({settings.get('mode', '')})"
    lines = [title, ""]
    lines += _overall_section(summary)
    lines += _bucket_section("EX by hardness (Spider rules on the gold SQL)", summary.get("by_hardness") or [], "hardness")
    lines += _bucket_section("EX by difficulty (given by the dataset)", summary.get("by_difficulty") or [], "difficulty")
    lines += _ablation_section(summary)
    lines += _stage_section(summary)
    lines += _linking_section(summary)
    lines += _cost_section(summary)
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    elif plot_note:
        lines += ["## Plots", "", plot_note, ""]
    lines += _settings_section(summary)
    return "\n".join(lines).rstrip() + "\n"


def write_plots(summary: Mapping[str, Any], out_dir: Path) -> list[str]:
    """PNG plots (accuracy by hardness, by stage, cost by stage); returns the file names written."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    written: list[str] = []

    def bars(name: str, labels: list[str], values: list[float], title: str, ylabel: str) -> None:
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
        ax.bar(range(len(labels)), values, color="#4C72B0")
        ax.set_xticks(range(len(labels)), labels, rotation=15, ha="right")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, max([100.0, *values]) * 1.08)
        for i, v in enumerate(values):
            ax.annotate(f"{v:.1f}", (i, v), ha="center", va="bottom", fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / name)
        plt.close(fig)
        written.append(name)

    hardness = summary.get("by_hardness") or []
    if hardness:
        bars(
            "accuracy_by_hardness.png",
            [f"{r['hardness']} (n={r['n']})" for r in hardness],
            [100 * r["ex"] for r in hardness],
            "EX by Spider hardness",
            "EX (%)",
        )
    stages = summary.get("ablation") or summary.get("stages") or []
    if stages:
        key = "variant" if summary.get("ablation") else "stage"
        bars(
            "accuracy_by_stage.png",
            [str(r[key]) for r in stages],
            [100 * (r["ex"] or 0) for r in stages],
            "EX by pipeline stage",
            "EX (%)",
        )
    cost = (summary.get("cost") or {}).get("by_stage") or {}
    if cost:
        names = list(cost)
        fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.6), dpi=100)
        left.bar(names, [cost[n]["seconds"] for n in names], color="#DD8452")
        left.set_title("seconds / question")
        bottom = [0.0] * len(names)
        for key, colour in (("input_tokens", "#55A868"), ("output_tokens", "#C44E52")):
            values = [cost[n][key] for n in names]
            right.bar(names, values, bottom=bottom, label=key.replace("_", " "), color=colour)
            bottom = [b + v for b, v in zip(bottom, values)]
        right.set_title("tokens / question")
        right.legend(fontsize=8)
        for ax in (left, right):
            ax.tick_params(axis="x", labelrotation=20)
        fig.tight_layout()
        fig.savefig(out_dir / "cost_by_stage.png")
        plt.close(fig)
        written.append("cost_by_stage.png")
    return written


def write_report(summary: Mapping[str, Any], out_dir: Path, *, plots: bool = True) -> Path:
    """Write report.md (and the PNG plots unless ``plots`` is False) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    note = None
    if plots:
        try:
            names = write_plots(summary, out_dir)
        except ImportError:
            note = "Plots skipped: matplotlib is not installed (pip install 'route-graph[eval]')."
    path = out_dir / "report.md"
    path.write_text(render_markdown(summary, names, note), encoding="utf-8")
    return path
