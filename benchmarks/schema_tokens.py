"""Schema tokens per prompt, 'ddl' vs 'compact', and predicted prompt tokens per MCP question.

No model runs: the default model's tokenizer (llama.cpp, vocabulary only) counts tokens.

1. The full-schema text (link_sample_rows) of each spider_train/valid.json database in both
   formats, checking ``rendering.CHARS_PER_TOKEN``: the budget's estimate must never under-count.
2. With ``--run DIR`` (a stored ablation run, e.g. benchmarks/runs/ablation-400-base-prefill): the
   schema text each question's prompts would carry under other sample-row settings, replayed from
   the run's recorded links and per-stage call counts (schema linking, the draft, noise correction,
   continuation writing and rescue send the full schema; generate sends the linked one). The text
   around the schema is taken as measured. This is how issue 11's setting was chosen before the
   paired 400-question run that measured it.

    python benchmarks/schema_tokens.py
    python benchmarks/schema_tokens.py --run benchmarks/runs/ablation-400-base-prefill --settings 3,10 1,3 0,10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

__all__ = ["main"]

FULL_SCHEMA_STAGES = ("schema_link", "noise_correct", "continue_write", "rescue")


def _parse_setting(text: str) -> tuple[int, int]:
    link, _, generate = text.partition(",")
    try:
        return int(link), int(generate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LINK_ROWS,GENERATE_ROWS such as 3,10, got {text!r}") from None


def replay_prompt_tokens(
    run_dir: Path, data: Path, settings: list[tuple[int, int]], count: Callable[[str], int]
) -> dict[tuple[int, int], float]:
    """Predicted prompt tokens per question for each (link_sample_rows, generate_sample_rows),
    the run's own setting first (= its measured mean); printed as a table and returned."""
    from route_graph import RouteConfig, open_database
    from route_graph.rendering import stage_schema_text

    preds = [json.loads(line) for line in (run_dir / "mcp" / "predictions.jsonl").read_text().splitlines() if line]
    recorded = json.loads((run_dir / "mcp" / "run.json").read_text())["settings"]["route_config"]
    base = (recorded["link_sample_rows"], recorded["generate_sample_rows"])
    settings = [base] + [s for s in settings if s != base]
    dbs: dict = {}
    full_cache: dict = {}
    schema_tokens = {s: 0 for s in settings}
    for p in preds:
        if p["db_id"] not in dbs:
            dbs[p["db_id"]] = open_database(data / "database" / p["db_id"] / f"{p['db_id']}.sqlite")
        db = dbs[p["db_id"]]
        stages = p["cost_by_stage"]
        n_full = sum(stages.get(s, {}).get("llm_calls", 0) for s in FULL_SCHEMA_STAGES)
        n_linked = stages.get("generate", {}).get("llm_calls", 0)
        for link_rows, generate_rows in settings:
            cfg = RouteConfig(
                link_sample_rows=link_rows, generate_sample_rows=generate_rows, schema_format=recorded["schema_format"]
            )
            key = (p["db_id"], link_rows)
            if key not in full_cache:
                full_cache[key] = count(stage_schema_text(db, cfg))
            linked = count(stage_schema_text(db, cfg, p["links"])) if p["links"] else full_cache[key]
            schema_tokens[(link_rows, generate_rows)] += n_full * full_cache[key] + n_linked * linked
    n = len(preds)
    measured = sum(p["cost"]["input_tokens"] for p in preds) / n
    around = measured - schema_tokens[base] / n
    print(f"\n{run_dir}: {n} questions, {measured:,.0f} prompt tokens/question measured "
          f"({around:,.0f} of them around the schema)\n")
    print("| link_sample_rows | generate_sample_rows | predicted prompt tokens/q | vs the run |")
    print("| --- | --- | --- | --- |")
    predicted = {s: around + schema_tokens[s] / n for s in settings}
    for s, tokens in predicted.items():
        change = f"{100 * (tokens / measured - 1):+.0f}%" if measured else "–"
        print(f"| {s[0]} | {s[1]} | {tokens:,.0f} | {change} |")
    return predicted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="Stored ablation run to replay (its mcp/predictions.jsonl).")
    parser.add_argument("--settings", nargs="*", type=_parse_setting, default=[(1, 3), (0, 10), (0, 3)],
                        help="LINK_ROWS,GENERATE_ROWS pairs to predict for --run.")
    args = parser.parse_args(argv)

    from llama_cpp import Llama

    from route_graph import RouteConfig, open_database
    from route_graph.models.cache import ensure_offline_gguf
    from route_graph.rendering import (
        CHARS_PER_TOKEN,
        estimate_tokens,
        stage_schema_text,
    )

    data = Path(os.environ.get("ROUTE_GRAPH_DATA") or REPO_ROOT.parent / "shared" / "data") / "spider_train"
    db_ids = sorted({e["db_id"] for e in json.loads((data / "valid.json").read_text())})
    vocab = Llama(model_path=str(ensure_offline_gguf("qwen2.5-coder-0.5b")), vocab_only=True, verbose=False)

    def count(text: str) -> int:
        return len(vocab.tokenize(text.encode(), add_bos=False))

    rows = {"ddl": [], "compact": []}
    worst_ratio = 10.0
    for db_id in db_ids:
        db = open_database(data / "database" / db_id / f"{db_id}.sqlite")
        for fmt, counts in rows.items():
            text = stage_schema_text(db, RouteConfig(schema_format=fmt, schema_token_budget=0))
            tokens = count(text)
            counts.append(tokens)
            worst_ratio = min(worst_ratio, len(text) / tokens)
            if estimate_tokens(text) < tokens:
                print(f"UNDER-COUNT {db_id} {fmt}: estimate {estimate_tokens(text)} < {tokens} tokens")
    print(f"{len(db_ids)} databases of valid.json, full schema with RouteConfig().link_sample_rows rows\n")
    print("| format | mean tokens | median | max | vs ddl |")
    print("| --- | --- | --- | --- | --- |")
    base = statistics.mean(rows["ddl"])
    for fmt, counts in rows.items():
        print(
            f"| {fmt} | {statistics.mean(counts):.0f} | {statistics.median(counts):.0f} | {max(counts)} | "
            f"{100 * (statistics.mean(counts) / base - 1):+.0f}% |"
        )
    print(f"\nfewest characters per token: {worst_ratio:.2f} (the estimate uses {CHARS_PER_TOKEN})")
    if args.run:
        replay_prompt_tokens(args.run, data, args.settings, count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
