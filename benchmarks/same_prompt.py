"""Same prompt, different answers: does a fresh llama.cpp context give a stored run's raw SQL?

Why: the MCP draft sends the single pass's prompt, yet a stored ``--mode single`` run and the MCP
run of one adapter differ in 17-40 of 400 answers. Part is ``requalify_columns`` (the single pass
repairs a failing column reference; the draft row of ``benchmarks/ablation.py`` is the raw SQL),
part is the engine: the same greedy prompt can give another answer when its KV state comes from
another prefix. This compares the raw model SQL of both runs (the single pass's before any repair)
and re-asks the prompt on a fresh context (llama.cpp context reset and the prefix LRU emptied before
each question, so no KV state is reused) for the questions where they differ, plus some where they
agree, counting which stored answer the fresh one equals.

    python benchmarks/same_prompt.py --model 'qwen2.5-coder-0.5b+finetune/phases/3b-ts-linked-noise' \\
        --single benchmarks/runs/phase3b-single --mcp benchmarks/runs/ablation-400-phase3b --agree 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from route_graph.evaluation.summary import read_predictions


@dataclass(frozen=True)
class Pair:
    """One question's two stored answers to the same prompt and whether each is right."""

    id: int
    single: str
    draft: str
    single_correct: bool
    draft_correct: bool

    @property
    def differ(self) -> bool:
        return self.single != self.draft


def _correct(row: dict, sql: str) -> bool:
    return bool((row.get("executions") or {}).get(sql, {}).get("correct"))


def raw_sql(output: dict) -> str:
    """The generate stage's SQL as the model wrote it (before ``requalify_columns``), from a
    stored record or a graph output."""
    for entry in output.get("trace") or ():
        if entry.get("stage") == "generate":
            return entry.get("proposed_sql") or ""
    return (output.get("stage_sql") or output.get("sql_by_stage") or {}).get("generate") or ""


def stored_pairs(single_run: Path, mcp_run: Path) -> list[Pair]:
    """The single pass's raw SQL and the MCP draft's, per question, in the single run's order."""
    mcp_dir = mcp_run / "mcp" if (mcp_run / "mcp" / "predictions.jsonl").is_file() else mcp_run
    single = read_predictions(single_run / "predictions.jsonl")
    drafts = {row["id"]: row for row in read_predictions(mcp_dir / "predictions.jsonl")}
    pairs = []
    for row in single:
        other = drafts.get(row["id"])
        if other is None:
            continue
        s = raw_sql(row)
        d = (other.get("stage_sql") or {}).get("draft") or ""
        pairs.append(Pair(row["id"], s.strip(), d.strip(), _correct(row, s), _correct(other, d)))
    return pairs


def pick(pairs: list[Pair], agree: int) -> list[Pair]:
    """Every differing question and the first ``agree`` agreeing ones, in run order."""
    agreeing = [p.id for p in pairs if not p.differ][:agree]
    keep = {p.id for p in pairs if p.differ} | set(agreeing)
    return [p for p in pairs if p.id in keep]


def summarize(pairs: list[Pair], fresh: dict[int, str]) -> str:
    """Markdown: how often the fresh answer equals the stored single / draft answer."""
    lines = [
        "| questions | n | right only in single | right only in draft | fresh = single | fresh = draft | fresh = neither |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, group in (("stored answers differ", True), ("stored answers agree", False)):
        rows = [p for p in pairs if p.differ == group and p.id in fresh]
        eq_s = sum(fresh[p.id] == p.single for p in rows)
        eq_d = sum(fresh[p.id] == p.draft for p in rows)
        neither = sum(fresh[p.id] not in (p.single, p.draft) for p in rows)
        only_s = sum(p.single_correct and not p.draft_correct for p in rows)
        only_d = sum(p.draft_correct and not p.single_correct for p in rows)
        lines.append(f"| {label} | {len(rows)} | {only_s} | {only_d} | {eq_s} | {eq_d} | {neither} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="The model spec both stored runs used (llama.cpp).")
    ap.add_argument("--single", type=Path, required=True, help="A stored --mode single run.")
    ap.add_argument("--mcp", type=Path, required=True, help="A stored full-MCP run of the same model.")
    ap.add_argument("--data", default="../shared/data/spider_train", help="The runs' dataset folder.")
    ap.add_argument("--split", default="valid.json")
    ap.add_argument("--limit", type=int, default=400)
    ap.add_argument("--sample-seed", type=int, default=0)
    ap.add_argument("--agree", type=int, default=20, help="Agreeing questions to re-ask as a control.")
    ap.add_argument("--out", type=Path, help="Write the per-question answers here (JSON).")
    args = ap.parse_args(argv)

    from route_graph.evaluation.datasets import load_dataset
    from route_graph.graph import build_route_graph
    from route_graph.graph.context import RouteConfig
    from route_graph.models.loading import load_chat_model

    chosen = pick(stored_pairs(args.single, args.mcp), args.agree)
    dataset = load_dataset(args.data, args.split, limit=args.limit, sample_seed=args.sample_seed)
    examples = {e.id: e for e in dataset.examples}
    llm = load_chat_model(args.model)
    config = RouteConfig().with_stages("")  # the single pass: one TS prompt on the full schema
    graphs: dict[str, object] = {}
    fresh: dict[int, str] = {}
    started = time.perf_counter()
    for pair in chosen:
        example = examples[pair.id]
        if example.db_id not in graphs:
            graphs[example.db_id] = build_route_graph(llm, dataset.db_path(example.db_id), config)
        engine = llm.engine()  # type: ignore[attr-defined]
        engine.llm.reset()
        engine.lru.entries.clear()
        engine.lru.size = 0
        output = graphs[example.db_id].invoke({"question": example.question, "hint": example.hint}, context=config)  # type: ignore[attr-defined]
        fresh[pair.id] = raw_sql(output).strip()
    seconds = time.perf_counter() - started
    if args.out:
        args.out.write_text(json.dumps([{**asdict(p), "fresh": fresh[p.id]} for p in chosen], indent=1) + "\n")
    print(f"{len(chosen)} questions re-asked on a fresh context in {seconds:.0f} s ({args.model})\n")
    print(summarize(chosen, fresh))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
