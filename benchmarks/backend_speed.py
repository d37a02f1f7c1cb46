"""Speed of one in-process engine on this CPU: raw prefill/decode, then full MCP questions warm.

Run once per engine, each in its own process (peak RSS is per process):

    python benchmarks/backend_speed.py --backend llamacpp --n 8
    python benchmarks/backend_speed.py --backend transformers --n 2     # fp32 on AVX2: slow

It prints, for benchmarks/RESULTS.md: the CPU (model, AMX or not, threads), model load time,
prefill and decode tokens/s on a ~1,000-token schema prompt, then ``--n`` seeded questions of
spider_train/valid.json through full MCP one at a time (warm; the timing a user waiting for an
answer sees) and, with ``--concurrent``, the same questions all in flight (batch-eval
throughput): seconds per question, calls and tokens per question and call, prefix-hit rate,
final SQL executable, peak RSS. ``--json FILE`` appends the numbers as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

__all__ = ["cpu_description", "main"]


def _data_dir() -> Path:
    env = os.environ.get("ROUTE_GRAPH_DATA")
    return (Path(env) if env else REPO_ROOT.parent / "shared" / "data") / "spider_train"


def cpu_description() -> dict[str, object]:
    """CPU model, whether it has AMX / AVX512-BF16 / AVX2, and the CPUs this process may use."""
    model, flags = platform.processor() or "unknown", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu": model,
        "amx": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "avx2": "avx2" in flags,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
    }


def _llama_cpp_kernels() -> str:
    """The x86 extensions this llama-cpp-python build was compiled for (its CMAKE_ARGS decide)."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode()
    return " ".join(p.split("=")[0].split(":")[-1].strip() for p in info.split("|") if p.strip().endswith("= 1"))


def _raw_speed(llm, schema_text: str) -> dict[str, float]:
    """Prefill tok/s on a schema prompt (1 new token), decode tok/s over 48 forced tokens."""
    from langchain_core.messages import HumanMessage

    prompt = [HumanMessage(schema_text + "\n\nQuestion: how many rows has each table? Answer with SQL.")]
    if hasattr(llm.engine(), "llm"):  # llama.cpp: empty the context so the prefill is real
        llm.engine().llm.reset()
        llm.engine().lru.entries.clear()
        llm.engine().lru.size = 0
    t = time.perf_counter()
    first = llm.invoke(prompt, max_new_tokens=1)
    prefill_s = time.perf_counter() - t
    n_prompt = first.usage_metadata["input_tokens"]
    short = [HumanMessage("Write a long SQLite query over a table t(a, b, c) with many conditions.")]
    llm.invoke(short, max_new_tokens=1)  # this prompt's prefill, to subtract below
    t = time.perf_counter()
    one = llm.invoke(short, max_new_tokens=1, stop_after_answer=False)
    short_prefill_s = time.perf_counter() - t
    t = time.perf_counter()
    many = llm.invoke(short, max_new_tokens=48, stop_after_answer=False)
    decode_s = time.perf_counter() - t - short_prefill_s
    n_out = many.usage_metadata["output_tokens"] - one.usage_metadata["output_tokens"]
    return {
        "prefill_tokens": n_prompt,
        "prefill_tok_s": round(n_prompt / prefill_s, 1),
        "decode_tokens": n_out,
        "decode_tok_s": round(n_out / max(decode_s, 1e-6), 1),
    }


def _run_questions(llm, examples: list[dict], concurrent: bool, cfg, extras=()) -> dict[str, object]:
    from route_graph import build_route_graph

    root = _data_dir() / "database"
    graphs = {db: build_route_graph(llm, root / db / f"{db}.sqlite", cfg, extras=extras) for db in {e["db_id"] for e in examples}}
    stats_before = _prefix_stats(llm)
    started = time.perf_counter()
    per_question = []

    def one(example: dict) -> dict:
        t = time.perf_counter()
        out = graphs[example["db_id"]].invoke({"question": example["question"]})
        per_question.append(time.perf_counter() - t)
        return out

    if concurrent:
        with ThreadPoolExecutor(max_workers=len(examples)) as pool:
            outs = list(pool.map(one, examples))
    else:
        outs = [one(e) for e in examples]
    wall = time.perf_counter() - started
    steps = [e for out in outs for e in out["trace"] if "llm_calls" in e]
    calls = sum(e["llm_calls"] for e in steps)
    tokens_in = sum(e["input_tokens"] for e in steps)
    tokens_out = sum(e["output_tokens"] for e in steps)
    stats_after = _prefix_stats(llm)
    n = len(examples)
    result: dict[str, object] = {
        "questions": n,
        "wall_s": round(wall, 1),
        "s_per_question": round(wall / n, 2),
        "slowest_question_s": round(max(per_question), 1),
        "calls_per_question": round(calls / n, 2),
        "input_tokens_per_question": round(tokens_in / n),
        "output_tokens_per_question": round(tokens_out / n),
        "input_tokens_per_call": round(tokens_in / max(calls, 1)),
        "executable": sum(bool(out["result"]["ok"]) for out in outs),
        "sql": [out["sql"] for out in outs],
    }
    if stats_before is not None and stats_after is not None:
        prompt = stats_after["prompt_tokens"] - stats_before["prompt_tokens"]
        reused = stats_after["reused_tokens"] - stats_before["reused_tokens"]
        result["prefix_hit_rate"] = round(reused / max(prompt, 1), 3)
        result["prefill_tokens_saved_per_question"] = round(reused / n)
        result["lru_hits"] = stats_after["lru_hits"] - stats_before["lru_hits"]
    return result


def _prefix_stats(llm) -> dict | None:
    stats = getattr(llm.engine(), "stats", None)
    return stats.as_dict() if stats is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["llamacpp", "transformers"], required=True)
    parser.add_argument("--model", default="default", help="offline model name (default: the 0.5B default)")
    parser.add_argument("--n", type=int, default=8, help="questions (seeded sample of valid.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrent", action="store_true", help="also run the questions all in flight")
    parser.add_argument("--json", type=Path, help="append the result as one JSON line here")
    parser.add_argument("--set", dest="config_overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="a RouteConfig field or an extra's setting for the MCP questions (as route-sql eval --set), repeatable")
    args = parser.parse_args(argv)

    from route_graph import RouteConfig, open_database
    from route_graph.graph.extras import parse_overrides
    from route_graph.models import load_chat_model

    overrides, extras = parse_overrides(args.config_overrides)
    cfg = RouteConfig(**overrides)
    info: dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "backend": args.backend, **cpu_description()}
    info["config_overrides"] = list(args.config_overrides)
    if args.backend == "llamacpp":
        info["llama_cpp_kernels"] = _llama_cpp_kernels()
    t = time.perf_counter()
    llm = load_chat_model(f"{args.backend}:{args.model}")
    llm.invoke("SELECT 1", max_new_tokens=1)  # loads the weights
    info["load_s"] = round(time.perf_counter() - t, 1)
    schema_db = open_database(_data_dir() / "database" / "formula_1" / "formula_1.sqlite")
    schema = schema_db.render_schema(sample_rows=1)[:4000]
    info.update(_raw_speed(llm, schema))
    examples = json.loads((_data_dir() / "valid.json").read_text())
    sample = random.Random(args.seed).sample(examples, args.n)
    info["one_at_a_time"] = _run_questions(llm, sample, concurrent=False, cfg=cfg, extras=extras)
    if args.concurrent:
        info["all_in_flight"] = _run_questions(llm, sample, concurrent=True, cfg=cfg, extras=extras)
    info["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    printable = {k: v for k, v in info.items()}
    for key in ("one_at_a_time", "all_in_flight"):
        if key in printable:
            printable[key] = {k: v for k, v in printable[key].items() if k != "sql"}
    print(json.dumps(printable, indent=2))
    if args.json:
        with args.json.open("a") as handle:
            handle.write(json.dumps(info) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
