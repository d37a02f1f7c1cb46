"""Wall time of full MCP on a few valid questions, with and without answer prefill.

Answer prefill (``RouteConfig.answer_prefill``) starts each reply with its target's opening
(```` ```sql ````, ``{``, the CW prefix). The base model otherwise explains its SQL before writing
it, and the decode steps of the longest reply hold up the whole batch. This runs the same
seeded questions, all in flight at once (the local model batches them), once per setting, and
prints wall time, output tokens and EX-free answer agreement for benchmarks/RESULTS.md.

    python benchmarks/mcp_speed.py [--n 8] [--seed 0] [--prefill on,off]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

__all__ = ["main", "run_once"]


def _data_dir() -> Path:
    env = os.environ.get("ROUTE_GRAPH_DATA")
    return (Path(env) if env else REPO_ROOT.parent / "shared" / "data") / "spider_train"


def run_once(llm, examples: list[dict], prefill: bool) -> dict:
    """All questions through full MCP at once; totals over the questions."""
    from route_graph import RouteConfig, build_route_graph

    root = _data_dir() / "database"
    cfg = RouteConfig(answer_prefill=prefill)
    graphs = {db: build_route_graph(llm, root / db / f"{db}.sqlite", cfg) for db in {e["db_id"] for e in examples}}
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(examples)) as pool:
        outs = list(pool.map(lambda e: graphs[e["db_id"]].invoke({"question": e["question"]}), examples))
    wall = time.perf_counter() - started
    steps = [e for out in outs for e in out["trace"] if "llm_calls" in e]
    return {
        "wall_s": wall,
        "calls": sum(e["llm_calls"] for e in steps),
        "input_tokens": sum(e["input_tokens"] for e in steps),
        "output_tokens": sum(e["output_tokens"] for e in steps),
        "executable": sum(bool(out["result"]["ok"]) for out in outs),
        "sql": [out["sql"] for out in outs],
    }


def main(argv: list[str] | None = None) -> int:
    from route_graph import load_chat_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="questions (default 8 = one full batch)")
    parser.add_argument("--seed", type=int, default=0, help="sample seed over valid.json")
    parser.add_argument("--prefill", default="on,off", help="settings to run, in order")
    args = parser.parse_args(argv)

    examples = json.loads((_data_dir() / "valid.json").read_text())
    sample = random.Random(args.seed).sample(examples, args.n)
    llm = load_chat_model()
    llm.invoke("SELECT 1")  # load the weights outside the timing
    results = {}
    for setting in [s.strip() for s in args.prefill.split(",") if s.strip()]:
        results[setting] = run_once(llm, sample, setting == "on")
    print(f"{args.n} questions of valid.json (seed {args.seed}), full MCP, all in flight at once\n")
    print("| answer prefill | wall (s) | s/question | LLM calls | tokens in / out | final SQL executes |")
    print("| --- | --- | --- | --- | --- | --- |")
    for setting, r in results.items():
        print(f"| {setting} | {r['wall_s']:.0f} | {r['wall_s'] / args.n:.1f} | {r['calls']} | "
              f"{r['input_tokens']:,} / {r['output_tokens']:,} | {r['executable']}/{args.n} |")
    if len(results) == 2:
        a, b = results.values()
        same = sum(x.strip() == y.strip() for x, y in zip(a["sql"], b["sql"]))
        print(f"\nfinal SQL identical in {same}/{args.n}; speed-up {b['wall_s'] / a['wall_s']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
