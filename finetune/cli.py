"""``route-finetune``: filter | synth | train | export | run (all four, resumable) | mine | phase | ship.

Every command reads the same configuration (``--config FILE``, JSON or YAML; see configs/) and
``--set section.field=value`` overrides; the dedicated flags below are shorthands for the most
used fields. Commands share one run directory (``--output-dir``), so they chain::

    route-finetune run --config configs/msft_spider_cpu.json           # everything, resumable
    route-finetune filter --output-dir outputs/x --data train.json      # or step by step
    route-finetune synth  --output-dir outputs/x --data train.json
    route-finetune train  --output-dir outputs/x --set train.max_steps=300
    route-finetune export --output-dir outputs/x
    route-finetune mine   --config configs/x.json --model SPEC --limit 20   # NC records from the model's SQL
    route-finetune phase  --config configs/phase1_ts_full.json --to finetune/phases/1-ts-full
    route-finetune ship   --adapter finetune/phases/3a-msft-part1 --name route-0.5b   # package data + adapter.gguf
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finetune.config import TASKS, RunConfig, load_config
from route_graph.errors import RouteGraphError

__all__ = ["build_parser", "main"]

# flag dest -> config field it overrides
_FLAG_FIELDS = {
    "data": "data",
    "db_dir": "db_dir",
    "output_dir": "output_dir",
    "limit": "limit",
    "seed": "seed",
    "judge_model": "filter.judge_model",
    "tasks": "synth.tasks",
    "sample_model": "synth.sample_model",
    "base_model": "train.base_model",
    "method": "train.method",
    "max_steps": "train.max_steps",
    "max_records": "train.max_records",
    "max_length": "train.max_length",
    "batch_size": "train.batch_size",
    "resume": "train.resume",
    "deadline": "train.deadline",
    "dtype": "export.dtype",
}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON/YAML run configuration (see configs/msft_*.json).")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help="Override any config field, e.g. --set train.lora_r=8 --set route.link_sample_rows=2.",
    )
    parser.add_argument("--output-dir", help="Run directory (default from the config: outputs/...).")


def _data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="Spider/BIRD-format training split (default: shared Spider train.json).")
    parser.add_argument("--db-dir", help="Folder of <db_id>/<db_id>.sqlite (default: found next to the split).")
    parser.add_argument("--limit", type=int, help="Use a seeded sample of N pairs.")
    parser.add_argument("--seed", type=int, help="Seed for sampling and synthesis.")


def _train_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-model", help="Model dir or offline name (default: the offline default model).")
    parser.add_argument("--method", choices=["lora", "full"])
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--max-records", type=int)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--resume", help="'auto' (default), a checkpoint dir, or 'none'.")
    parser.add_argument(
        "--deadline", help="Stop training with a checkpoint before this: '2h30m', '45m' from now, or an ISO time."
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for ``route-sql finetune`` and the docs)."""
    parser = argparse.ArgumentParser(
        prog="route-finetune",
        description="ROUTE multitask fine-tuning (MSFT): filter noisy pairs, synthesize TS/SL/NC/CW "
        "records, train LoRA/full, export a merged model.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("filter", help="Drop training pairs whose gold SQL fails/times out (optionally: model judge).")
    _common(p)
    _data_flags(p)
    p.add_argument("--judge-model", help="Model spec that judges each pair with the NC prompt.")

    p = sub.add_parser("synth", help="Synthesize MSFT records (JSONL) from a Spider/BIRD training split.")
    _common(p)
    _data_flags(p)
    p.add_argument("--tasks", help=f"Comma-separated subset of {','.join(TASKS)}.")
    p.add_argument("--sample-model", help="Model spec whose sampled answers become extra NC records.")
    p.add_argument("--out", help="Write records here instead of OUTPUT_DIR/data/records.jsonl.")

    p = sub.add_parser("train", help="Fine-tune on the records (resumes from the latest checkpoint).")
    _common(p)
    _train_flags(p)
    p.add_argument("--records", action="append", help="Records JSONL (repeatable; default OUTPUT_DIR/data/records.jsonl).")

    p = sub.add_parser("export", help="Merge the LoRA adapter into a standalone model dir (or check it for vLLM).")
    _common(p)
    p.add_argument("--adapter", help="Adapter dir (default OUTPUT_DIR/train/adapter).")
    p.add_argument("--base-model", help="Base model (default: the one recorded in the adapter).")
    p.add_argument("--out", help="Merged model dir (default OUTPUT_DIR/merged).")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--check-only", action="store_true", help="Only check the adapter is servable by vLLM --enable-lora.")
    p.add_argument("--adapter-copy", metavar="DIR",
                   help="Instead of merging, write the adapter with export.dtype weights to DIR (e.g. bf16 to ship).")

    p = sub.add_parser("phase", help="Commit a finished training phase: bf16 adapter + PHASE.md in a folder (finetune/training/phases.py).")
    _common(p)
    p.add_argument("--to", required=True, metavar="DIR", help="Phase folder to write, e.g. finetune/phases/1-ts-full.")
    p.add_argument("--command-line", default=None, help="The command that trained it (recorded in PHASE.md).")
    p.add_argument("--notes", default="", help="A paragraph for PHASE.md: what this phase is in the plan.")

    p = sub.add_parser(
        "mine", help="NC records from a model's own SQL on the filtered split, labelled by execution (resumable)."
    )
    _common(p)
    p.add_argument("--model", required=True, metavar="SPEC",
                   help="Model spec (load_chat_model), e.g. 'qwen2.5-coder-0.5b+finetune/phases/2a-ts-linked-part1'.")
    p.add_argument("--limit", type=int, dest="mine_limit", metavar="N", help="Mine N examples of the seeded order (default: all).")
    p.add_argument("--skip", type=int, default=0, metavar="M", help="Skip the first M examples of the seeded order.")
    p.add_argument("--batch-size", type=int, default=1, dest="mine_batch_size", metavar="B",
                   help="Prompts per llm.batch (default 1; the transformers engine batches, llama.cpp does not).")
    p.add_argument("--output", help="Records JSONL to append to (default OUTPUT_DIR/data/mined.jsonl).")

    p = sub.add_parser(
        "ship", help="Put an adapter in the package data (route_graph/adapters_data/NAME) with its prebuilt LoRA GGUF."
    )
    p.add_argument("--adapter", required=True, metavar="DIR", help="Adapter folder, e.g. finetune/phases/3a-msft-part1.")
    p.add_argument("--name", required=True, help="The packaged model's spec name, e.g. route-0.5b.")
    p.add_argument("--base", default=None, help="Offline base model it runs on (default: qwen2.5-coder-0.5b).")
    p.add_argument("--to", metavar="DIR", help="Folder to write (default route_graph/adapters_data/NAME).")

    p = sub.add_parser("run", help="filter -> synth -> train -> export; finished steps are reused (resumable).")
    _common(p)
    _data_flags(p)
    _train_flags(p)
    p.add_argument("--until", choices=["filter", "synth", "train", "export"], default="export")
    p.add_argument("--force", action="append", default=[], choices=["filter", "synth", "train", "export"],
                   help="Redo a finished step (repeatable).")
    return parser


def _config(args: argparse.Namespace) -> RunConfig:
    overrides = list(args.set)
    for dest, field_path in _FLAG_FIELDS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "tasks":
            value = [t.strip() for t in str(value).split(",") if t.strip()]
        if dest == "resume" and str(value).lower() == "none":
            value = None
        overrides.append(f"{field_path}={json.dumps(value)}")
    return load_config(args.config, overrides)


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "ship":  # reads no run configuration
        from finetune.training.ship import next_steps, ship_adapter
        from route_graph.models.spec import DEFAULT_MODEL

        base = args.base or DEFAULT_MODEL
        out = ship_adapter(args.adapter, args.name, base=base, destination=args.to)
        _print({"packaged": str(out), "files": sorted(p.name for p in out.iterdir()), **next_steps(args.name, base, out)})
        return 0
    from finetune import pipeline

    cfg = _config(args)
    paths = pipeline.RunPaths(Path(cfg.output_dir).expanduser())
    if args.command == "run":
        _print(pipeline.run_all(cfg, until=args.until, force=args.force))
        return 0
    if args.command == "filter":
        dataset, examples = pipeline.load_examples(cfg)
        kept = pipeline.run_filter(cfg, dataset, examples, paths, force=True)
        report = json.loads(paths.filter_report.read_text(encoding="utf-8"))
        _print({"kept": len(kept), "dropped": report["dropped"], "by_reason": report["by_reason"],
                "report": str(paths.filter_report), "filtered_split": str(paths.filtered_split)})
        return 0
    if args.command == "synth":
        dataset, examples = pipeline.load_examples(cfg)
        if paths.filter_report.is_file():  # a filter step ran in this run directory: honour it
            kept = set(json.loads(paths.filter_report.read_text(encoding="utf-8"))["kept_ids"])
            examples = [e for e in examples if e.id in kept]
        records = Path(args.out) if args.out else paths.records
        report = records.with_name(records.stem + ".report.json") if args.out else paths.synth_report
        summary = pipeline.run_synth(cfg, dataset, examples, records, report, force=True)
        _print({k: v for k, v in summary.items() if k != "skipped"})
        return 0
    if args.command == "train":
        from finetune.training.train import train

        records = pipeline.training_records(cfg, args.records or [paths.records])
        result = train(records, paths.train_dir, cfg.train)
        _print({"adapter_dir": result.adapter_dir, "model_dir": result.model_dir, "steps": result.steps,
                "finished": result.finished, "train_loss": result.train_loss, "seconds": round(result.seconds, 1),
                "summary": result.summary_path})
        return 0
    if args.command == "mine":
        dataset, examples = pipeline.load_examples(cfg)
        kept = pipeline.run_filter(cfg, dataset, examples, paths)  # the run's filter report, made if missing
        output = Path(args.output) if args.output else paths.mined
        summary = pipeline.run_mine(cfg, dataset, kept, args.model, output, limit=args.mine_limit, skip=args.skip,
                                    batch_size=args.mine_batch_size)
        _print(summary)
        return 0
    if args.command == "phase":
        from finetune.training.phases import commit_phase

        config_path = args.config or "(defaults)"
        command = args.command_line or f"route-finetune run --config {config_path} --until train"
        out = commit_phase(paths.train_dir, args.to, config_path=config_path, command=command, notes=args.notes)
        _print({"phase": str(out), "files": sorted(p.name for p in out.iterdir()),
                "load_with": f"--model 'qwen2.5-coder-0.5b+{out}'"})
        return 0
    if args.command == "export":
        from finetune.training.export import check_adapter, merge_adapter

        adapter = Path(args.adapter) if args.adapter else paths.train_dir / "adapter"
        if args.check_only:
            config = check_adapter(adapter)
            _print({"adapter": str(adapter), "rank": config.get("r"), "servable_by_vllm": True})
            return 0
        if args.adapter_copy:
            from finetune.training.export import copy_adapter

            out = copy_adapter(adapter, args.adapter_copy, dtype=cfg.export.dtype, base_model=args.base_model)
            _print({"adapter": str(out), "load_with": f"load_chat_model('BASE+{out}')"})
            return 0
        out = merge_adapter(adapter, args.out or paths.merged_dir, base_model=args.base_model, dtype=cfg.export.dtype)
        _print({"merged_model": str(out), "load_with": f"load_chat_model({str(out)!r})", "serve_with": f"vllm serve {out}"})
        return 0
    raise AssertionError(args.command)  # argparse restricts the choices


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``route-finetune``; returns the exit status (errors: 2, with a message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except RouteGraphError as exc:
        print(f"route-finetune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("route-finetune: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
