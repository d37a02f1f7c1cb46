"""``route-sql eval``: evaluate the graph (or the single-pass baseline) on a Spider/BIRD-format split.

Example::

    route-sql eval --data ../shared/data/spider_train --split valid.json --limit 200 \\
        --sample-seed 0 --mode mcp --concurrency 4 --out runs/valid200

Rerunning the same command continues an interrupted run; ``--overwrite`` starts it again.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from route_graph.errors import RouteGraphError
from route_graph.evaluation.report import pct
from route_graph.evaluation.runner import EvalSettings, RunResult, run_eval

__all__ = ["build_parser", "main", "settings_from_args"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``route-sql eval``."""
    p = argparse.ArgumentParser(
        prog="route-sql eval",
        description="Execution accuracy, schema-linking P/R, per-stage attribution and cost on a "
        "Spider- or BIRD-format dataset. Resumable: rerun the same command after an interruption.",
    )
    p.add_argument("--data", help="dataset directory (holds the split, database/ and tables.json)")
    p.add_argument("--split", required=True, help="question file, relative to --data or absolute (e.g. dev.json)")
    p.add_argument("--db-dir", help="folder with <db_id>/<db_id>.sqlite (default: found under --data)")
    p.add_argument("--limit", type=int, help="evaluate a seeded random sample of N questions")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the --limit sample (default 0)")
    p.add_argument("--mode", choices=("single", "mcp"), default="mcp",
                   help="single: one text-to-SQL prompt on the full schema (the 'w/o MCP' baseline); "
                   "mcp: the ROUTE pipeline (default)")
    p.add_argument("--stages", help="MCP stages to run, a subset of sl,nc,cw,rescue (default: all)")
    p.add_argument("--model", help="chat model spec (default: the offline Qwen2.5-Coder-0.5B; BASE+ADAPTER_DIR[@SCALE]; "
                   "'openai:http://HOST:PORT/v1#NAME' for an OpenAI-compatible server; PROVIDER:MODEL such as "
                   "openai:gpt-4o-mini through LangChain's init_chat_model; or a HF model dir/id)")
    p.add_argument("--prompt-style", choices=("zero_shot", "few_shot"), default="zero_shot",
                   help="few_shot adds a worked example (base models); zero_shot for fine-tuned ones")
    p.add_argument("--set", dest="config_overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="a RouteConfig field for this run, e.g. --set schema_format=compact, or an "
                   "extra's setting, which builds the extra in: --set value_retrieval=true, --set "
                   "self_consistency=5 (repeatable; applied after --stages)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="questions in flight; local models batch concurrent calls (default 1)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per scoring query (default 10)")
    p.add_argument("--max-rows", type=int, default=100_000, help="rows fetched per scoring query (default 100000)")
    p.add_argument("--ex-semantics", choices=("auto", "spider", "bird"), default="auto",
                   help="spider: multiset rows, column permutations allowed; bird: row sets; "
                   "auto: bird for BIRD-format data (default)")
    p.add_argument("--float-decimals", type=int, default=6, help="floats are rounded to this many decimals before comparing")
    p.add_argument("--ves-repeats", type=int, help="timing repeats for VES (default 10 on BIRD data, 0 = off otherwise)")
    p.add_argument("--out", required=True, help="output directory (predictions.jsonl, summary.json, report.md, plots)")
    p.add_argument("--overwrite", action="store_true", help="discard an existing run in --out and start again")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="skip the matplotlib plots")
    return p


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    """EvalSettings from parsed arguments."""
    return EvalSettings(
        data=args.data,
        split=args.split,
        limit=args.limit,
        sample_seed=args.sample_seed,
        mode=args.mode,
        stages=args.stages,
        model=args.model,
        concurrency=args.concurrency,
        db_dir=args.db_dir,
        timeout_s=args.timeout,
        max_rows=args.max_rows,
        semantics=args.ex_semantics,
        float_decimals=args.float_decimals,
        ves_repeats=args.ves_repeats,
        prompt_style=args.prompt_style,
        config_overrides=tuple(args.config_overrides),
    )


def _print_summary(result: RunResult) -> None:
    o = result.summary["overall"]
    print(f"EX {pct(o['ex'])}% on {o['scored']} questions (executable {pct(o['executable'])}%), "
          f"{o['gold_errors']} gold errors; {result.new_questions} answered in this session.")
    for row in result.summary.get("ablation") or []:
        print(f"  {row['variant']:<24} EX {pct(row['ex'])}%")
    print(f"Report: {result.report}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``route-sql eval``; returns the process exit status."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        settings = settings_from_args(args)
        result = run_eval(
            settings,
            args.out,
            progress=not args.no_progress,
            overwrite=args.overwrite,
            plots=not args.no_plots,
        )
    except RouteGraphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: answers so far are in {args.out}; rerun the same command to resume.", file=sys.stderr)
        return 130
    _print_summary(result)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
