"""Schema tokens per prompt, 'ddl' vs 'compact', on the spider_train/valid.json databases.

No model runs: the default model's tokenizer (llama.cpp, vocabulary only) counts the tokens of
the full-schema text (link_sample_rows) each database's prompts carry, in both formats, and checks
``rendering.CHARS_PER_TOKEN``: the budget's estimate must never under-count.

    python benchmarks/schema_tokens.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

__all__ = ["main"]


def main() -> int:
    from llama_cpp import Llama

    from route_graph import RouteConfig, open_database
    from route_graph._cache import ensure_offline_gguf
    from route_graph.rendering import (
        CHARS_PER_TOKEN,
        estimate_tokens,
        stage_schema_text,
    )

    data = Path(os.environ.get("ROUTE_GRAPH_DATA") or REPO_ROOT.parent / "shared" / "data") / "spider_train"
    db_ids = sorted({e["db_id"] for e in json.loads((data / "valid.json").read_text())})
    vocab = Llama(model_path=str(ensure_offline_gguf("qwen2.5-coder-0.5b")), vocab_only=True, verbose=False)
    rows = {"ddl": [], "compact": []}
    worst_ratio = 10.0
    for db_id in db_ids:
        db = open_database(data / "database" / db_id / f"{db_id}.sqlite")
        for fmt, counts in rows.items():
            text = stage_schema_text(db, RouteConfig(schema_format=fmt, schema_token_budget=0))
            tokens = len(vocab.tokenize(text.encode(), add_bos=False))
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
