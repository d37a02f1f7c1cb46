"""What a user waits for: `route-sql ask` cold (fresh process) and warm (model already loaded).

Cold = the README's command in a new process with the model cache ready: interpreter start,
imports, weight loading and one full MCP question. Warm = the same graph answering each demo
question in one process after the first. Prints a Markdown table for benchmarks/RESULTS.md.

    python benchmarks/ask_latency.py [--cold-runs 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

__all__ = ["cold_ask", "main", "warm_asks"]


def cold_ask(question: str) -> tuple[float, dict]:
    """Wall time of ``route-sql ask --json QUESTION`` in a fresh interpreter, and its output."""
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "route_graph.cli", "ask", "--json", question],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    return time.perf_counter() - started, json.loads(run.stdout)


def warm_asks(questions: list[str]) -> list[tuple[str, float, dict]]:
    """Per-question wall time of the default graph in this process, after one warm-up question."""
    from route_graph import build_route_graph, load_chat_model
    from route_graph.demo import demo_database_path

    graph = build_route_graph(load_chat_model(), demo_database_path())
    graph.invoke({"question": questions[0]})  # loads the weights, warms the kernels
    timed = []
    for question in questions:
        started = time.perf_counter()
        out = graph.invoke({"question": question})
        timed.append((question, time.perf_counter() - started, out))
    return timed


def main(argv: list[str] | None = None) -> int:
    from route_graph.demo import DEMO_QUESTIONS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold-runs", type=int, default=2, help="fresh-process runs of the first demo question")
    args = parser.parse_args(argv)

    lines = ["| what | seconds | answer |", "| --- | --- | --- |"]
    for i in range(args.cold_runs):
        seconds, out = cold_ask(DEMO_QUESTIONS[0])
        rows = out["result"].get("rows")
        sql = " ".join(out["sql"].split())
        lines.append(f"| cold `route-sql ask` #{i + 1} (new process, cache ready) | {seconds:.1f} | `{sql}` → {rows} |")
    timed = warm_asks(DEMO_QUESTIONS)
    for question, seconds, out in timed:
        calls = sum(e.get("llm_calls", 0) for e in out["trace"])
        sql = " ".join(out["sql"].split())  # one table row
        lines.append(f"| warm: {question} ({calls} model calls) | {seconds:.1f} | `{sql}` |")
    median = statistics.median(s for _, s, _ in timed)
    lines.append(f"| warm median per question | {median:.1f} | |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
