"""ROUTE's ablation (Table 4 shape) on a fixed, seeded sample of spider_train/valid.json.

What it runs (all with one model instance, loaded once; every run is resumable):

1. **Full MCP** (all stages, ``sl,nc,cw,rescue``) on the sample. Its ``sql_by_stage`` yields the cumulative
   rows: *single-pass* = the MCP draft (one TS prompt on the full schema with 3 sample rows —
   the same prompt ``--mode single`` sends), *+SL* = cut after generation, *+SL+NC* = cut after
   noise correction, *full MCP* = the answer (see ``route_graph.evaluation.attribution``).
2. **Single-pass, measured** (``--mode single``) on the same sample, unless ``--no-single-run``.
   It checks the draft = single-pass claim and, since it sends the same prompts again in another
   batch mix, it measures run-to-run noise (how many answers change between two runs).
3. Optional non-cumulative variants (``--variants "nc,cw;sl,cw"``), one run each.
4. **Throughput**: the first ``--throughput-n`` questions of the sample, answered sequentially
   (concurrency 1) and batched (``--concurrency``), fresh each time, same warm model.

It writes every run under ``--out`` and a Markdown section (``ablation.md`` there) ready for
benchmarks/RESULTS.md; ``--results FILE`` appends it to FILE.

    python benchmarks/ablation.py --limit 200 --sample-seed 0 --concurrency 4
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from route_graph.evaluation.attribution import STAGES, TRACE_STAGES, ablation_rows
from route_graph.evaluation.datasets import load_dataset
from route_graph.evaluation.report import append_section, markdown_table, pct
from route_graph.evaluation.runner import EvalSettings, RunResult, run_eval
from route_graph.evaluation.stats import paired_comparison, wilson_interval
from route_graph.evaluation.summary import read_predictions, summarize

__all__ = ["default_data_dir", "machine_info", "main", "saved_run"]


def default_data_dir() -> Path:
    """$ROUTE_GRAPH_DATA/spider_train, else ../shared/data/spider_train next to the repository."""
    env = os.environ.get("ROUTE_GRAPH_DATA")
    base = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return base / "spider_train"


def machine_info() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"nproc": str(cores), "cpu": cpu, "python": platform.python_version(), "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    try:
        info["commit"] = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def _records(result: RunResult) -> list[dict[str, Any]]:
    return sorted(read_predictions(result.predictions), key=lambda r: r["id"])


def saved_run(path: Path) -> RunResult:
    """A run as it is on disk, finished or stopped part-way (``--report-only``)."""
    try:
        run = json.loads((path / "run.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"{path} holds no run.json: run the ablation first (without --report-only).") from None
    records = read_predictions(path / "predictions.jsonl")
    summary = summarize(records, settings=run.get("settings"), sessions=run.get("sessions", ()))
    return RunResult(out_dir=path, summary=summary, new_questions=0)


def _cost_until(records: Sequence[Mapping[str, Any]], checkpoint: str) -> dict[str, float] | None:
    """Mean cost per question of running the pipeline up to ``checkpoint`` (None for the draft,
    whose call shares the schema-linking stage's meter)."""
    if checkpoint == "draft" or not records:
        return None
    limit = STAGES.index(checkpoint)
    keys = ("llm_calls", "input_tokens", "output_tokens", "seconds")
    total = dict.fromkeys(keys, 0.0)
    for r in records:
        for stage, cost in (r.get("cost_by_stage") or {}).items():
            if STAGES.index(TRACE_STAGES[stage]) <= limit:
                for k in keys:
                    total[k] += float(cost.get(k, 0))
    return {k: v / len(records) for k, v in total.items()}


def _cost_cells(cost: Mapping[str, float] | None) -> list[str]:
    if cost is None:
        return ["(in SL)", "", ""]
    return [f"{cost['llm_calls']:.2f}", f"{cost['input_tokens']:,.0f} / {cost['output_tokens']:,.0f}", f"{cost['seconds']:.1f}"]


def _row(label: str, correct: int, n: int, executable: float | None, cost: Mapping[str, float] | None, meaning: str) -> list[str]:
    low, high = wilson_interval(correct, n)
    return [label, pct(correct / n if n else None), f"{pct(low)}–{pct(high)}", pct(executable), *_cost_cells(cost), meaning]


def _noise(single: list[dict[str, Any]], mcp: list[dict[str, Any]]) -> dict[str, Any]:
    """Same prompt twice: the measured single-pass run vs the MCP draft, question by question."""
    drafts = {r["id"]: r for r in mcp}
    pairs = [(s, drafts[s["id"]]) for s in single if s["id"] in drafts and s.get("status") != "gold_error"]
    same_sql = sum((s.get("pred_sql") or "").strip() == (d.get("stage_sql", {}).get("draft") or "").strip() for s, d in pairs)
    draft_ok = {d["id"] for _, d in pairs if (d.get("executions") or {}).get((d.get("stage_sql", {}).get("draft") or "").strip(), {}).get("correct")}
    single_ok = {s["id"] for s, _ in pairs if s.get("correct")}
    return {"n": len(pairs), "same_sql": same_sql, "flips": len(draft_ok ^ single_ok), "ex_gap": (len(single_ok) - len(draft_ok)) / len(pairs) if pairs else 0.0}


def _worst_stage(stages: Sequence[Mapping[str, Any]]) -> str:
    rows = [r for r in stages if r.get("fixed") is not None]
    if not rows:
        return ""
    worst = max(rows, key=lambda r: (r["broken"] or 0) - (r["fixed"] or 0))
    net = (worst["broken"] or 0) - (worst["fixed"] or 0)
    if net <= 0:
        return "No stage breaks more answers than it fixes."
    return f"The stage that hurts most is **{worst['stage']}**: it broke {worst['broken']} answers and fixed {worst['fixed']}."


def render_section(
    *,
    args: argparse.Namespace,
    command: str,
    mcp: RunResult,
    single: RunResult | None,
    variants: Mapping[str, RunResult],
    throughput: Mapping[str, RunResult],
    machine: Mapping[str, str],
) -> str:
    """The Markdown section for benchmarks/RESULTS.md."""
    s = mcp.summary
    records = _records(mcp)
    scored = [r for r in records if r.get("status") != "gold_error"]
    n = len(scored)
    lines = [
        f"## Ablation: MCP stages on {args.dataset_label} ({n} questions, seed {args.sample_seed}) — {_dt.date.today().isoformat()}",
        "",
        f"Command: `{command}`  ",
        (f"Machine: {machine.get('nproc')} CPU cores ({machine.get('cpu')}), Python {machine.get('python')}, "
         f"torch {machine.get('torch', '–')}, commit {machine.get('commit', '–')}. Model: `{args.model or 'offline default (Qwen2.5-Coder-0.5B-Instruct)'}`, "
         f"concurrency {args.concurrency}. Gold queries that fail are left out ({s['overall']['gold_errors']})."),
        "",
    ]
    header = ["variant", "EX (%)", "95% CI", "executable (%)", "LLM calls/q", "tokens in / out per q", "s/q", "what the row is"]
    rows = []
    if single is not None:
        so = single.summary["overall"]
        rows.append(_row("single-pass (measured)", so["correct"], so["scored"], so["executable"],
                         single.summary["cost"]["per_question"], "separate `--mode single` run"))
    for row in s["ablation"]:
        where = "the MCP run's answer" if row["checkpoint"] == "final" else f"MCP run cut after {row['checkpoint']}"
        rows.append(_row(row["variant"], row["correct"], row["n"], row["executable"], _cost_until(scored, row["checkpoint"]),
                         f"{where}: {row['description']}"))
    for name, result in variants.items():
        vo = result.summary["overall"]
        rows.append(_row(f"stages {name}", vo["correct"], vo["scored"], vo["executable"], result.summary["cost"]["per_question"],
                         f"separate `--stages {name}` run"))
    lines += ["### EX by variant", "", markdown_table(header, rows), ""]
    lines += [
        ("Cumulative rows come from one full-MCP run: each is the answer a pipeline stopped after that stage "
         "would return (the stage's SQL, or the latest earlier executable SQL if it fails, as finalize does). "
         "Cost columns are means per question of the stages up to that point (the draft's call is metered "
         "together with schema linking, so its cost is in the measured single-pass row)."),
        "",
    ]

    # significance and noise
    ids = [int(r["id"]) for r in scored]
    final_ok = {int(r["id"]) for r in scored if r.get("correct")}
    lines += ["### Is the difference real?", ""]
    noise = None
    comparisons = []
    if single is not None:
        single_records = _records(single)
        single_ok = {int(r["id"]) for r in single_records if r.get("correct")}
        comparisons.append(("single-pass (measured)", paired_comparison(ids, single_ok, final_ok)))
        noise = _noise(single_records, records)
    if any(row["checkpoint"] == "draft" for row in s["ablation"]):
        draft_ok = set(_correct_ids(records, "draft"))
        comparisons.append(("single-pass (MCP draft)", paired_comparison(ids, draft_ok, final_ok)))
    table = [
        [f"full MCP vs {name}", f"{pct(c.gain)}", f"{pct(c.ci_low)} to {pct(c.ci_high)}", c.only_b, c.only_a, f"{c.p_value:.3g}"]
        for name, c in comparisons
    ]
    if table:
        lines += [markdown_table(["comparison", "EX gain (points)", "paired bootstrap 95% CI", "only MCP right", "only baseline right", "McNemar p"], table), ""]
    if noise is not None:
        lines += [
            (f"Run-to-run noise: the measured single-pass run and the MCP draft send the same prompts; "
             f"{noise['same_sql']}/{noise['n']} SQL strings are identical, {noise['flips']} questions flip "
             f"between right and wrong, and EX differs by {pct(abs(noise['ex_gap']))} points."),
            "",
        ]
    if comparisons:
        name, c = comparisons[0]
        noise_pts = abs(noise["ex_gap"]) if noise else 0.0
        # Without a measured single-pass run there is no run-to-run noise figure: say so, claim none.
        noise_text = (f"more than the measured run-to-run noise ({pct(noise_pts)} points)" if noise
                      else "(run-to-run noise not measured: no --mode single run)")
        if c.gain > noise_pts and c.ci_low > 0:
            verdict = (
                f"**Full MCP beats {name} by {pct(c.gain)} points**, {noise_text}, and the paired 95% interval "
                f"({pct(c.ci_low)} to {pct(c.ci_high)}) excludes 0."
            )
        elif c.gain > noise_pts:
            verdict = (
                f"**Full MCP gains {pct(c.gain)} points over {name}**, {noise_text}, but the paired 95% interval "
                f"({pct(c.ci_low)} to {pct(c.ci_high)}) still includes 0 at this sample size. {_worst_stage(s['stages'])}"
            )
        else:
            noise_part = f"noise {pct(noise_pts)} points, " if noise else ""
            verdict = (
                f"**Full MCP does not beat {name} by more than the noise** (gain {pct(c.gain)} points, "
                f"{noise_part}95% CI {pct(c.ci_low)} to {pct(c.ci_high)}). {_worst_stage(s['stages'])}"
            )
        lines += [verdict, ""]

    # per-stage attribution
    stage_rows = [
        [r["stage"], pct(r["ex"]), pct(r["exec_error_rate"]), r["ran"] if r["ran"] is not None else "–",
         r["accepted"] if r["accepted"] is not None else "–", r["fixed"] if r["fixed"] is not None else "–",
         r["broken"] if r["broken"] is not None else "–"]
        for r in s["stages"]
    ]
    lines += [
        "### Per-stage attribution (full MCP run)",
        "",
        "EX of the SQL after each stage; fixed / broken = answers that went wrong→right / right→wrong against the stage above.",
        "",
        markdown_table(["after stage", "EX (%)", "exec errors (%)", "ran", "accepted", "fixed", "broken"], stage_rows),
        "",
    ]
    link = s.get("linking")
    if link:
        lines += [
            "### Schema linking (reduced schema vs the gold SQL's tables/columns)",
            "",
            markdown_table(
                ["table P", "table R", "column P", "column R", "strict recall", "columns kept"],
                [[pct(link["table_precision"]), pct(link["table_recall"]), pct(link["column_precision"]),
                  pct(link["column_recall"]), pct(link["strict_recall"]), pct(link["columns_kept"])]],
            ),
            "",
        ]
    by_hardness = s.get("by_hardness") or []
    if by_hardness:
        lines += [
            "### Full MCP by Spider hardness",
            "",
            markdown_table(["hardness", "n", "EX (%)"], [[b["hardness"], b["n"], pct(b["ex"])] for b in by_hardness]),
            "",
        ]
    if throughput:
        rows = []
        for label, result in throughput.items():
            session = (result.summary.get("throughput") or [{}])[-1]
            rows.append([label, session.get("concurrency"), session.get("questions"), f"{session.get('wall_s', 0):.1f}",
                         f"{session.get('questions_per_min') or 0:.2f}", pct(result.summary["overall"]["ex"])])
        seq, bat = (throughput.get(k) for k in ("sequential", "batched"))
        lines += ["### Throughput: batched vs sequential (same questions, warm model)", "", markdown_table(
            ["run", "concurrency", "questions", "wall (s)", "questions/min", "EX (%)"], rows), ""]
        if seq is not None and bat is not None:
            qs, qb = (r.summary["throughput"][-1].get("questions_per_min") or 0 for r in (seq, bat))
            same = _same_answers(_records(seq), _records(bat))
            lines += [f"Batching speed-up: {qb / qs:.2f}× ({same[0]}/{same[1]} final SQL strings identical between the two runs).", ""]
    return "\n".join(lines).rstrip() + "\n"


def _correct_ids(records: Sequence[Mapping[str, Any]], checkpoint: str) -> list[int]:
    row = next((r for r in ablation_rows(records) if r["checkpoint"] == checkpoint), None)
    return row["correct_ids"] if row else []


def _same_answers(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    other = {r["id"]: (r.get("pred_sql") or "").strip() for r in b}
    pairs = [((r.get("pred_sql") or "").strip(), other[r["id"]]) for r in a if r["id"] in other]
    return sum(x == y for x, y in pairs), len(pairs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="spider_train directory (default: ../shared/data/spider_train or $ROUTE_GRAPH_DATA/spider_train)")
    p.add_argument("--split", default="valid.json")
    p.add_argument("--limit", type=int, default=200, help="questions in the seeded sample (default 200)")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--model", default=None, help="model spec (default: the offline default model)")
    p.add_argument("--concurrency", type=int, default=4, help="questions in flight (default 4)")
    p.add_argument("--no-single-run", action="store_true", help="skip the measured --mode single run")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write the section from the runs in --out as they are (also a stopped run)")
    p.add_argument("--set", dest="config_overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="a RouteConfig field for every run (route-sql eval --set), repeatable")
    p.add_argument("--variants", default="", help="extra stage sets run separately, ';'-separated (e.g. 'nc,cw;sl,cw')")
    p.add_argument("--throughput-n", type=int, default=8, help="questions for batched vs sequential timing (0 = skip)")
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "runs" / "ablation"), help="directory for the runs")
    p.add_argument("--results", default=None, help="append the Markdown section to this file (e.g. benchmarks/RESULTS.md)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-plots", action="store_true", help="skip each run's matplotlib plots")
    return p


def main(argv: Sequence[str] | None = None, *, llm: Any = None) -> int:
    """Run the ablation; ``llm`` replaces the model (tests)."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    data = Path(args.data) if args.data else default_data_dir()
    args.dataset_label = f"{data.name}/{args.split}"
    out = Path(args.out)
    command = "python benchmarks/ablation.py " + shlex.join(list(argv) if argv is not None else sys.argv[1:])
    if args.report_only:  # the section from what --out holds now (a stopped run: its answered questions)
        single_dir = out / "single"
        section = render_section(args=args, command=command, mcp=saved_run(out / "mcp"),
                                 single=saved_run(single_dir) if (single_dir / "run.json").is_file() else None,
                                 variants={}, throughput={}, machine=machine_info())
        (out / "ablation.md").write_text(section, encoding="utf-8")
        append_section(section, args.results)
        return 0
    if llm is None:
        from route_graph import load_chat_model

        llm = load_chat_model(args.model)
    progress = not args.no_progress

    def run(name: str, fresh: bool = False, **kw: Any) -> RunResult:
        base = {"data": str(data), "split": args.split, "limit": args.limit, "sample_seed": args.sample_seed,
                "model": args.model, "concurrency": args.concurrency,
                "config_overrides": tuple(args.config_overrides), **kw}
        print(f"== {name}", file=sys.stderr, flush=True)
        return run_eval(EvalSettings(**base), out / name, llm=llm, progress=progress, overwrite=fresh, plots=not args.no_plots)

    mcp = run("mcp", mode="mcp")
    single = None if args.no_single_run else run("single", mode="single")
    variants = {v.strip(): run("stages-" + v.strip().replace(",", "-"), stages=v.strip())
                for v in args.variants.split(";") if v.strip()}
    throughput: dict[str, RunResult] = {}
    if args.throughput_n > 0:
        # The first questions of the same seeded sample, as a split file of their own.
        ids = [r["id"] for r in _records(mcp)][: args.throughput_n]
        dataset = load_dataset(data, args.split)
        questions = json.loads(dataset.split_path.read_text(encoding="utf-8"))
        subset = out / "throughput_subset.json"
        subset.write_text(json.dumps([questions[i] for i in ids]), encoding="utf-8")
        db_dir = dataset.db_paths[questions[ids[0]]["db_id"]].parent.parent if ids else None
        common = {"split": str(subset.resolve()), "limit": None, "db_dir": str(db_dir) if db_dir else None}
        throughput["sequential"] = run("throughput-sequential", fresh=True, concurrency=1, **common)
        throughput["batched"] = run("throughput-batched", fresh=True, concurrency=args.concurrency, **common)
    section = render_section(args=args, command=command, mcp=mcp, single=single, variants=variants,
                             throughput=throughput, machine=machine_info())
    (out / "ablation.md").write_text(section, encoding="utf-8")
    append_section(section, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
