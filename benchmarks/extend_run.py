"""Extend a stored seeded run to a larger sample without re-asking the questions it answered.

The evaluation standard extends a borderline 400-question result (+3..+7) to all 1,042 valid
questions. The 400 answers are stored; this starts the larger run with them (its settings must
equal the stored run's but for the sample size, checked like a resume) and the runner then asks
only the rest: 642 questions instead of 1,042, 30-50 min less of 2-core CPU per side::

    python benchmarks/extend_run.py --stored benchmarks/runs/ablation-400-phase3d/mcp --limit 1042 \\
        --out benchmarks/runs/ablation-1042-phase3d/mcp
    python benchmarks/ablation.py --limit 1042 --sample-seed 0 --concurrency 1 --no-single-run \\
        --throughput-n 0 --model MODEL --out benchmarks/runs/ablation-1042-phase3d   # asks the other 642
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from route_graph.errors import ConfigError
from route_graph.evaluation.runner import RUN_FILE, EvalSettings, recorded_model, seed_run

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stored", required=True, type=Path, help="the stored run directory (e.g. an ablation's mcp/)")
    p.add_argument("--limit", type=int, default=None, help="the larger sample's size (default: every question)")
    p.add_argument("--out", required=True, type=Path, help="the new run directory")
    args = p.parse_args(list(argv) if argv is not None else None)
    run_file = args.stored / RUN_FILE
    if not run_file.is_file():
        print(f"error: {args.stored} is not an evaluation run (no {RUN_FILE}).", file=sys.stderr)
        return 2
    saved = json.loads(run_file.read_text(encoding="utf-8"))["settings"]
    fields = ("data", "split", "sample_seed", "mode", "stages", "model", "db_dir", "timeout_s", "max_rows",
              "semantics", "float_decimals", "ves_repeats", "prompt_style")
    kept = {k: saved[k] for k in fields if k in saved} | {"model": recorded_model(saved)}
    settings = EvalSettings(**kept, limit=args.limit,
                            config_overrides=tuple(saved.get("config_overrides", ())))
    try:
        copied = seed_run(args.stored, settings, args.out)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: seeded with {copied} answers of {args.stored}; resume it with the same settings and --limit {args.limit}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
