"""The human-readable side of a run: report.md with tables, and matplotlib PNG plots.

Plots use the Agg backend (files only, never a display) and are skipped with a note in the report
when matplotlib is not installed (``pip install 'route-graph[eval]'``). Every EX bar carries its
95% Wilson interval (``stats.wilson_interval``, the interval the tables print).

``ci_plot_data`` + ``write_ci_plots`` draw the README's plots from a run's per-question records
(``benchmarks/plot_ablation.py`` is the command): EX per ablation variant, the paired EX
difference of each variant against the single prompt (``stats.paired_comparison``: paired
bootstrap 95% CI, exact McNemar p) and full MCP's EX by Spider hardness.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from route_graph.evaluation.attribution import ablation_rows
from route_graph.evaluation.hardness import HARDNESS_LEVELS
from route_graph.evaluation.stats import paired_comparison, wilson_interval
from route_graph.evaluation.summary import bucket_table

__all__ = [
    "CI_PLOTS",
    "append_section",
    "ci_plot_data",
    "markdown_table",
    "model_label",
    "pct",
    "render_markdown",
    "run_caption",
    "write_ci_plots",
    "write_plots",
    "write_report",
]

_STAGE_LABELS = {
    "draft": "draft (single-pass, full schema)",
    "generate": "generate",
    "noise_correct": "noise_correct",
    "continue_write": "continue_write",
    "rescue": "rescue (nothing executed)",
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

    def bars(name: str, labels: list[str], rows: Sequence[Mapping[str, Any]], title: str) -> None:
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
        _ex_bars(ax, labels, [_with_ci(r) for r in rows])
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(out_dir / name)
        plt.close(fig)
        written.append(name)

    hardness = summary.get("by_hardness") or []
    if hardness:
        bars(
            "accuracy_by_hardness.png",
            [f"{r['hardness']} (n={r['n']})" for r in hardness],
            hardness,
            "EX by Spider hardness (95% Wilson CI)",
        )
    stages = summary.get("ablation") or summary.get("stages") or []
    if stages:
        key = "variant" if summary.get("ablation") else "stage"
        bars(
            "accuracy_by_stage.png",
            [str(r[key]) for r in stages],
            stages,
            "EX by pipeline stage (95% Wilson CI)",
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


# --------------------------------------------------------------------------- plots with 95% CIs

#: The files ``write_ci_plots`` writes, the key plot first.
CI_PLOTS: tuple[str, ...] = ("eval_gain_ci.png", "eval_ex_by_variant_ci.png", "eval_ex_by_hardness_ci.png")
_BLUE, _GREY, _GREEN, _RED = "#4C72B0", "#9A9A9A", "#2E8B57", "#C44E52"


def _with_ci(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with n and correct (or ex) plus its 95% Wilson interval as ci_low / ci_high."""
    out = dict(row)
    if "ci_low" not in out:
        n = int(row.get("n") or 0)
        correct = row.get("correct")
        correct = round((row.get("ex") or 0.0) * n) if correct is None else int(correct)
        out["ci_low"], out["ci_high"] = wilson_interval(correct, n)
    return out


def _ex_bars(ax: Any, labels: Sequence[str], rows: Sequence[Mapping[str, Any]], colours: Sequence[str] | None = None,
             rotation: float = 15) -> None:
    """EX bars (%) with 95% CI whiskers (rows hold ex, ci_low, ci_high), each labelled with its EX."""
    ex = [100 * (r.get("ex") or 0.0) for r in rows]
    low = [100 * r["ci_low"] for r in rows]
    high = [100 * r["ci_high"] for r in rows]
    xs = range(len(rows))
    ax.bar(xs, ex, color=list(colours) if colours else _BLUE, width=0.6)
    ax.errorbar(xs, ex, yerr=[[e - lo for e, lo in zip(ex, low)], [hi - e for e, hi in zip(ex, high)]],
                fmt="none", ecolor="black", elinewidth=1.2, capsize=5)
    for x, e, hi in zip(xs, ex, high):
        ax.annotate(f"{e:.1f}", (x, hi), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(list(xs), list(labels), rotation=rotation, ha="right" if rotation else "center")
    ax.set_ylabel("EX (%)")
    ax.set_ylim(0, 108)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def ci_plot_data(
    records: Sequence[Mapping[str, Any]],
    stages: Sequence[str] = ("sl", "nc", "cw"),
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The numbers behind ``write_ci_plots``, from one run's per-question records.

    Variants are the run's cumulative ablation rows (``attribution.ablation_rows``: the MCP draft
    is the single prompt, the run's answer is the last row), each with its EX and 95% Wilson
    interval; ``differences`` compares every later variant with the first on the same questions
    (``stats.paired_comparison``: gain, paired bootstrap 95% CI, McNemar p); ``hardness`` is the
    run's final answer by Spider hardness. Questions whose gold SQL fails are left out everywhere.
    """
    scored = [r for r in records if r.get("status") != "gold_error"]
    ids = [int(r["id"]) for r in scored]
    rows = ablation_rows(records, stages)
    variants = []
    for i, row in enumerate(rows):
        label = row["variant"]
        if i == 0:
            label = "single prompt (MCP draft)" if row["checkpoint"] == "draft" else "single prompt"
        variants.append(_with_ci({"variant": label, **{k: row[k] for k in ("checkpoint", "n", "correct", "ex")}}))
    differences = []
    if rows:
        base = set(rows[0]["correct_ids"])
        for row, variant in zip(rows[1:], variants[1:]):
            c = paired_comparison(ids, base, set(row["correct_ids"]), resamples=resamples, seed=seed)
            differences.append({"variant": variant["variant"], "vs": variants[0]["variant"], **c.to_dict()})
    return {
        "n": len(ids),
        "baseline": variants[0]["variant"] if variants else None,
        "final": variants[-1]["variant"] if variants else None,
        "variants": variants,
        "differences": differences,
        "hardness": [_with_ci(b) for b in bucket_table(scored, "hardness", HARDNESS_LEVELS)],
    }


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def write_ci_plots(
    data: Mapping[str, Any],
    out_dir: Path,
    *,
    subtitle: str = "",
    footnote: str = "",
    dpi: int = 100,
) -> list[str]:
    """Write ``CI_PLOTS`` from ``ci_plot_data``'s numbers; returns the file names written.

    ``subtitle`` (under each title) should say the data set, n and the model; ``footnote`` the
    run's settings. A plot without data (e.g. no second variant to compare) is not written.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    def finish(fig: Any, ax: Any, title: str, name: str) -> None:
        ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
        if footnote:
            fig.text(0.01, 0.01, footnote, fontsize=7, color="#555555", ha="left", va="bottom")
        fig.tight_layout(rect=(0, 0.04 if footnote else 0, 1, 1))
        fig.savefig(out_dir / name, dpi=dpi)
        plt.close(fig)
        written.append(name)

    def wrap(label: str) -> str:
        return label.replace(" (", "\n(")

    diffs = list(data.get("differences") or [])
    if diffs:
        fig, ax = plt.subplots(figsize=(8, 1.9 + 0.62 * len(diffs)))
        ys = list(range(len(diffs)))[::-1]  # first variant on top
        gains = [100 * d["gain"] for d in diffs]
        lows = [100 * d["ci_low"] for d in diffs]
        highs = [100 * d["ci_high"] for d in diffs]
        for y, d, g, lo, hi in zip(ys, diffs, gains, lows, highs):
            colour = _GREEN if d["ci_low"] > 0 else _RED if d["ci_high"] < 0 else _GREY
            ax.errorbar([g], [y], xerr=[[g - lo], [hi - g]], fmt="o", color=colour, ecolor=colour,
                        elinewidth=2, capsize=6, markersize=7)
            ax.annotate(
                f"{_points(d['gain'])} points (95% CI {_points(d['ci_low'])} to {_points(d['ci_high'])})\n"
                f"fixes {d['only_b']}, breaks {d['only_a']} questions; McNemar p = {d['p_value']:.2g}",
                (hi, y), xytext=(10, 0), textcoords="offset points", ha="left", va="center", fontsize=8,
            )
        ax.axvline(0, color="black", linewidth=1, linestyle="--")
        span = max(max(highs), 0) - min(min(lows), 0) or 1.0
        ax.set_xlim(min(min(lows), 0) - 0.1 * span, max(max(highs), 0) + 1.1 * span)
        ax.set_ylim(-0.6, len(diffs) - 0.4)
        ax.set_yticks(ys, [d["variant"] for d in diffs])
        ax.set_xlabel("EX difference on the same questions (percentage points)\n"
                      "whisker: paired bootstrap 95% CI; dashed line: no difference", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        finish(fig, ax, f"EX gain over the {data.get('baseline')}, paired per question", CI_PLOTS[0])

    variants = list(data.get("variants") or [])
    if variants:
        fig, ax = plt.subplots(figsize=(8, 4.2))
        colours = [_GREY] + [_BLUE] * (len(variants) - 1)
        _ex_bars(ax, [wrap(v["variant"]) for v in variants], variants, colours, rotation=0)
        finish(fig, ax, "EX per variant, all from one run (95% Wilson CI)", CI_PLOTS[1])

    hardness = list(data.get("hardness") or [])
    if hardness:
        fig, ax = plt.subplots(figsize=(8, 4.2))
        _ex_bars(ax, [f"{h['hardness']}\n(n={h['n']})" for h in hardness], hardness, rotation=0)
        finish(fig, ax, f"EX by Spider hardness, {data.get('final') or 'final answer'} (95% Wilson CI)", CI_PLOTS[2])
    return written


def model_label(spec: str | None) -> str:
    """A model spec as a reader knows it: the offline default -> 'Qwen2.5-Coder-0.5B-Instruct (offline default)'
    (a packaged tuned model by its name: 'route-0.5b (offline default)'), 'openai:URL#NAME' -> NAME, a
    directory or file -> its name. Runs record the concrete model (``spec.concrete_spec``); a record
    holding None/'default' is from before that, when the default was the untuned base."""
    from route_graph.models import packaged
    from route_graph.models.cache import OFFLINE_MODELS
    from route_graph.models.spec import DEFAULT_MODEL

    name = str(spec or "default")
    for prefix in ("llamacpp:", "transformers:", "hf:"):
        name = name.removeprefix(prefix)
    if name.lower() == "default":
        name = DEFAULT_MODEL
    default = " (offline default)" if name.lower() == packaged.DEFAULT_SPEC else ""
    if name.lower().partition("@")[0] in packaged.PACKAGED_MODELS:  # 'route-0.5b', 'route-0.5b@0.75'
        return name.lower() + default
    if name in OFFLINE_MODELS:
        return OFFLINE_MODELS[name].description.split(",")[0] + default
    if name.startswith("openai:"):
        return name.rsplit("#", 1)[1] if "#" in name else name
    return Path(name.rstrip("/")).name or name


def run_caption(settings: Mapping[str, Any], n: int, sep: str = " · ") -> str:
    """'spider_train/valid.json, seed-0 sample: n = 160 of 400 questions · model <model>' for a run's
    settings (``sep`` between the two parts: a newline under a plot title)."""
    split = str(settings.get("split") or "")
    data = settings.get("data")
    if data and split and not Path(split).is_absolute():
        dataset = f"{Path(str(data)).name}/{split}"
    else:
        dataset = Path(str(settings.get("split_path") or split or "dataset")).name
    limit = settings.get("limit")
    if limit:
        sample = settings.get("selected") or limit
        seed = settings.get("sample_seed", 0)
        where = (f"{dataset}, seed-{seed} sample: n = {n} questions" if n == sample
                 else f"{dataset}, seed-{seed} sample: n = {n} of {sample} questions")
    else:
        where = f"{dataset}: n = {n} questions"
    return f"{where}{sep}model: {model_label(settings.get('model'))}"
