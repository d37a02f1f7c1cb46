"""Base vs fine-tuned model: the same ablation, question by question (ROUTE's MSFT gain).

Both sides are ``benchmarks/ablation.py`` outputs (``--out`` directories) on the same seeded
sample, one run with the base model and one with the tuned model (``--model`` = the merged
directory). From each side's full-MCP run it takes the cumulative checkpoints (single-pass = the
MCP draft, +SL, +SL+NC, full MCP) and compares tuned against base on the same questions: EX,
executable rate, paired bootstrap interval and exact McNemar test. It adds what changed inside
the pipeline (per-stage fixes, noise correction verdicts, schema-linking recall, cost, error
kinds) and, with ``--train-dir``, how the model was trained (records, steps, loss, time).
Either side may instead be a ``route-sql eval --mode single`` run: it is compared on the
single-pass row only (it sends the MCP draft's prompt), a cheap control for a model's TS skill.
Two MCP runs with different stage sets (an ablation's ``--variants`` run, ``route-sql eval
--stages``) are compared on the final answer only: their intermediate rows are not the same stages.

    python benchmarks/finetune_gain.py --base runs/ablation --tuned runs/ablation-msft \\
        --train-dir outputs/msft_spider_cpu/train --results benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from route_graph.evaluation.attribution import ablation_rows, cost_summary, linking_summary, stage_table
from route_graph.evaluation.report import append_section, markdown_table, pct
from route_graph.evaluation.stats import paired_comparison
from route_graph.evaluation.summary import read_predictions

__all__ = ["error_kinds", "load_side", "main", "render_section"]


class Side:
    """One model's full-MCP run: its settings and its scored records (sorted by question id)."""

    def __init__(self, run_dir: Path) -> None:
        run_json = run_dir / "run.json"
        predictions = run_dir / "predictions.jsonl"
        if not run_json.is_file() or not predictions.is_file():
            raise SystemExit(f"{run_dir} is not a finished evaluation run (no run.json / predictions.jsonl); "
                             "run benchmarks/ablation.py first.")
        self.dir = run_dir
        self.settings: dict[str, Any] = json.loads(run_json.read_text(encoding="utf-8"))["settings"]
        self.records = sorted(read_predictions(predictions), key=lambda r: r["id"])
        self.selected = int(self.settings.get("selected") or len(self.records))
        self.single = self.settings.get("mode") == "single"
        self.rows = self._rows()

    def _rows(self) -> dict[str, dict[str, Any]]:
        """Rows by variant label; a ``--mode single`` run has the single-pass row only."""
        rows = ablation_rows(self.records, stages=() if self.single else ("sl", "nc", "cw"))
        return {r["variant"]: r for r in rows}

    def restrict(self, ids: set[int]) -> None:
        """Keep only the questions in ``ids``."""
        self.records = [r for r in self.records if r["id"] in ids]
        self.rows = self._rows()


def load_side(path: Path) -> Side:
    """An ablation ``--out`` directory (its ``mcp`` run) or an evaluation run directory itself."""
    return Side(path / "mcp" if (path / "mcp" / "run.json").is_file() else path)


def error_kinds(records: Sequence[Mapping[str, Any]]) -> Counter[str]:
    """Why final answers failed to execute, grouped by the start of SQLite's message."""
    kinds: Counter[str] = Counter()
    for r in records:
        ex = r.get("ex") or {}
        if r.get("status") == "gold_error" or ex.get("executed"):
            continue
        message = str(ex.get("error") or ex.get("error_kind") or r.get("status"))
        kinds[message.split(":")[0].strip()[:40] or "unknown"] += 1
    return kinds


def _common_questions(base: Side, tuned: Side) -> list[int]:
    """Question ids both runs scored. A run still in progress (the runner is resumable) is compared
    on the questions it has finished; anything else that differs is an error."""
    keys: tuple[str, ...] = ("data", "split", "limit", "sample_seed", "mode")
    if base.single != tuned.single:  # a --mode single run against an MCP run's draft: same prompt
        keys = ("data", "split", "limit", "sample_seed")
    differ = [k for k in keys if base.settings.get(k) != tuned.settings.get(k)]
    ids_a = {r["id"] for r in base.records}
    ids_b = {r["id"] for r in tuned.records}
    # Stopped runs answer different subsets of the same sample: compare on what both answered.
    partial = len(ids_a) < base.selected or len(ids_b) < tuned.selected
    if differ or not (ids_a <= ids_b or ids_b <= ids_a or (partial and ids_a & ids_b)):
        raise SystemExit(f"the two runs are not on the same questions/settings (differ: {differ or 'question ids'}); "
                         "re-run the ablation with the same --limit/--sample-seed.")
    common = ids_a & ids_b
    base.restrict(common)
    tuned.restrict(common)
    return sorted(common)


def _stage_set(side: Side) -> str:
    """The MCP stages a run had on (runs from before the setting was recorded had all of them)."""
    return str(side.settings.get("stages_effective", "sl,nc,cw"))


def _train_lines(train_dir: Path) -> list[str]:
    summary_path = train_dir / "train_summary.json"
    if not summary_path.is_file():
        return [f"(no {summary_path}: training summary not available)", ""]
    s = json.loads(summary_path.read_text(encoding="utf-8"))
    cfg = s.get("config", {})
    losses = []
    log = train_dir / "train_log.jsonl"
    if log.is_file():
        losses = [e["loss"] for e in map(json.loads, log.read_text(encoding="utf-8").splitlines()) if "loss" in e]
    mix_text = ", ".join(f"{k} {v}" for k, v in (s.get("mix") or {}).get("taken", {}).items())
    rows = [
        ["method", f"{s.get('method')} (r={cfg.get('lora_r')}, alpha={cfg.get('lora_alpha')})" if s.get("method") == "lora" else s.get("method")],
        ["records / tokens", f"{s.get('records'):,} records, {s.get('tokens'):,} tokens ({s.get('completion_tokens'):,} completion)"],
        ["task mix", mix_text],
        ["steps", f"{s.get('steps')} (batch {cfg.get('batch_size')} × accumulation {cfg.get('grad_accum')}, lr {cfg.get('learning_rate')}, {cfg.get('epochs')} epoch)"],
        ["loss", f"first logged {losses[0]:.3f}, last logged {losses[-1]:.3f}, mean {s.get('train_loss'):.3f}" if losses else f"mean {s.get('train_loss')}"],
        ["time", f"{s.get('seconds', 0) / 60:.1f} min on {s.get('device')} ({s.get('threads')} threads, {s.get('precision')})"],
    ]
    return ["### Training", "", markdown_table(["", ""], rows), ""]


def render_section(
    base: Side, tuned: Side, *, command: str, train_dir: Path | None = None, labels: tuple[str, str] = ("base", "tuned")
) -> str:
    """The Markdown section for benchmarks/RESULTS.md (``labels`` name the two sides, e.g. two
    graph configurations of the same model: ``("old default", "new default")``)."""
    lb, lt = labels
    common = _common_questions(base, tuned)
    ids = [r["id"] for r in base.records if r.get("status") != "gold_error"]
    n = len(ids)
    partial = (f"Compared on the {len(common)} of {max(base.selected, tuned.selected)} sampled questions that both runs "
               "have finished (one run is incomplete).  ") if len(common) < max(base.selected, tuned.selected) else ""
    today = _dt.date.today().isoformat()
    lines = [
        (f"## Fine-tuning gain: base vs tuned model, same MCP settings ({n} questions, seed {base.settings.get('sample_seed')}) — {today}"
         if labels == ("base", "tuned") else
         f"## {lb} vs {lt}, same model ({n} questions, seed {base.settings.get('sample_seed')}) — {today}"),
        "",
        f"{partial}Command: `{command}`  ",
        f"{lb} run: `{base.dir}` (model `{base.settings.get('model')}`, --set {base.settings.get('config_overrides') or 'none'}); "
        f"{lt} run: `{tuned.dir}` (model `{tuned.settings.get('model')}`, --set {tuned.settings.get('config_overrides') or 'none'}).",
        "",
    ]
    if train_dir is not None:
        lines += _train_lines(train_dir)
    final_only = not (base.single or tuned.single) and _stage_set(base) != _stage_set(tuned)
    if final_only:
        differ = f"Stage sets differ ({lb}: {_stage_set(base)}; {lt}: {_stage_set(tuned)})"
        lines += [f"{differ}: compared on the final answer only.", ""]
    lines += [f"### EX by variant: {lt} vs {lb}", ""]
    table = []
    verdicts = []
    for variant, row_b in base.rows.items():
        row_t = tuned.rows.get(variant)
        if row_t is None or (final_only and row_b["checkpoint"] != "final"):
            continue
        cmp = paired_comparison(ids, row_b["correct_ids"], row_t["correct_ids"])
        table.append([row_b["variant"], pct(row_b["ex"]), pct(row_t["ex"]), f"{100 * cmp.gain:+.1f}",
                      f"{100 * cmp.ci_low:+.1f} to {100 * cmp.ci_high:+.1f}", cmp.only_b, cmp.only_a,
                      f"{cmp.p_value:.3g}", pct(row_b["executable"]), pct(row_t["executable"])])
        verdicts.append((row_b["variant"], cmp))
    lines += [markdown_table(["variant", f"{lb} EX (%)", f"{lt} EX (%)", "gain (points)", "paired bootstrap 95% CI",
                              f"only {lt} right", f"only {lb} right", "McNemar p", f"{lb} executable (%)",
                              f"{lt} executable (%)"], table), ""]
    for variant, cmp in verdicts:
        if cmp.ci_low > 0:
            verdict = f"**{lt} is better by more than the noise**"
        elif cmp.ci_high < 0:
            verdict = f"**{lt} is worse by more than the noise**"
        else:
            verdict = "the difference is within the noise"
        lines.append(f"- {variant}: {verdict} "
                     f"({100 * cmp.gain:+.1f} points, CI {100 * cmp.ci_low:+.1f} to {100 * cmp.ci_high:+.1f}, p = {cmp.p_value:.3g}).")
    lines.append("")

    lines += ["### Per-stage attribution", "", "fixed / broken = answers that went wrong→right / right→wrong against the stage above.", ""]
    stages = []
    for label, side in ((lb, base), (lt, tuned)):
        for r in stage_table(side.records):
            stages.append([label, r["stage"], pct(r["ex"]), pct(r["exec_error_rate"]), r["ran"] if r["ran"] is not None else "–",
                           r["accepted"] if r["accepted"] is not None else "–",
                           r["fixed"] if r["fixed"] is not None else "–", r["broken"] if r["broken"] is not None else "–"])
    lines += [markdown_table(["run", "after stage", "EX (%)", "exec errors (%)", "ran", "accepted", "fixed", "broken"], stages), ""]

    lines += ["### Schema linking, cost and failures", ""]
    other = []
    for label, side in ((lb, base), (lt, tuned)):
        link = linking_summary(side.records) or {}
        cost = cost_summary(side.records)["per_question"]
        kinds = error_kinds(side.records)
        other.append([label, pct(link.get("table_recall")), pct(link.get("column_recall")), pct(link.get("strict_recall")),
                      pct(link.get("columns_kept")), f"{cost.get('llm_calls', 0):.2f}",
                      f"{cost.get('input_tokens', 0):,.0f} / {cost.get('output_tokens', 0):,.0f}",
                      "; ".join(f"{k} ×{v}" for k, v in kinds.most_common(4)) or "none"])
    lines += [markdown_table(["run", "table R", "column R", "strict recall", "columns kept", "LLM calls/q",
                              "tokens in / out per q", "final answers that fail (kind ×count)"], other), ""]
    return "\n".join(lines).rstrip() + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, type=Path, help="ablation --out directory (or run directory) of the base model")
    p.add_argument("--tuned", required=True, type=Path, help="ablation --out directory (or run directory) of the tuned model")
    p.add_argument("--train-dir", type=Path, default=None, help="the fine-tuning run's train/ directory (train_summary.json)")
    p.add_argument("--results", default=None, help="append the Markdown section to this file (e.g. benchmarks/RESULTS.md)")
    p.add_argument("--labels", default="base,tuned",
                   help="names of the two sides, comma-separated (e.g. 'old default,new default' for two graph configurations)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    command = "python benchmarks/finetune_gain.py " + shlex.join(list(argv) if argv is not None else sys.argv[1:])
    labels = tuple(part.strip() for part in args.labels.split(",", 1))
    if len(labels) != 2 or not all(labels):
        raise SystemExit("--labels takes two names separated by a comma, e.g. 'old default,new default'.")
    section = render_section(load_side(args.base), load_side(args.tuned), command=command, train_dir=args.train_dir,
                             labels=labels)
    append_section(section, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
