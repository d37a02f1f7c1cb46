"""Training throughput per setting: real (record) tokens per second of forward + backward + AdamW step.

The MSFT data of a few Spider training databases (every pair of each, as one epoch sees them, so
records share their database's prompt prefix as often as in the real run) is encoded once; then
each setting trains the same model for ``--seconds`` of wall clock (after one warm-up batch) and reports real tokens/s
(the tokens the records hold, whether or not a shared prefix was computed once), the tokens
actually computed, and peak RSS. The loop is finetune.training.train's compute path (same encoding,
prefix groups, collators and loss); the Trainer's bookkeeping around it is not timed.

    for s in records records-nodrop groups groups-top12; do
      python benchmarks/train_speed.py --dbs 3 --seconds 150 --settings $s --out runs/train_speed.jsonl
    done                                     # one process per setting: peak RSS is per setting
    python benchmarks/train_speed.py --settings groups,groups-top12 --format compact

Settings: ``records`` (up to 4 records and 4,096 padded tokens per batch, LoRA dropout 0.05: the
2026-11-22 run),
``records-nodrop`` (dropout 0), ``groups`` (prefix groups of <= 16 records and 2,048 padded suffix tokens, dropout 0),
``groups-top12`` (same, LoRA on the top 12 of 24 layers). Record the output in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    "records": {"prefix_groups": False, "lora_dropout": 0.05, "lora_top_layers": None},
    "records-nodrop": {"prefix_groups": False, "lora_dropout": 0.0, "lora_top_layers": None},
    "groups": {"prefix_groups": True, "lora_dropout": 0.0, "lora_top_layers": None},
    "groups-top12": {"prefix_groups": True, "lora_dropout": 0.0, "lora_top_layers": 12},
}


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor()
    model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")
    flags = next((line for line in out.splitlines() if line.startswith("Flags")), "")
    return f"{model}, AMX: {'yes' if 'amx_tile' in flags else 'no'}, AVX512-BF16: {'yes' if 'avx512_bf16' in flags else 'no'}"


def _records(dbs: int, seed: int, schema_format: str) -> tuple[list, list[str]]:
    from finetune.config import SynthConfig
    from finetune.pipeline import DatabasePool, default_split
    from finetune.data.synthesis import Synthesizer, SynthReport
    from route_graph import RouteConfig
    from route_graph.evaluation.datasets import load_dataset

    dataset = load_dataset(None, default_split())
    names = sorted({e.db_id for e in dataset.examples})
    chosen = set(random.Random(seed).sample(names, dbs))
    examples = [e for e in dataset.examples if e.db_id in chosen]
    route = RouteConfig(schema_format=schema_format)
    return list(Synthesizer(route, SynthConfig(), seed=seed).run(examples, DatabasePool(dataset), SynthReport())), sorted(chosen)


def _measure(name: str, rows: list[dict], tokenizer, base: str, seconds: float, seed: int) -> dict:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from finetune.training.encoding import PadCollator
    from finetune.training.prefix_groups import PrefixGroupCollator, completion_loss_sum, group_by_prefix
    from finetune.config import TrainConfig
    from finetune.training.train import choose_precision, lora_config

    setting = SETTINGS[name]
    precision = choose_precision("auto")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    cfg = TrainConfig(lora_dropout=setting["lora_dropout"], lora_top_layers=setting["lora_top_layers"])
    model = get_peft_model(model, lora_config(cfg, model.config.num_hidden_layers))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    pad = int(tokenizer.pad_token_id)
    rng = random.Random(seed)
    if setting["prefix_groups"]:
        groups = group_by_prefix(rows, max_records=16, max_suffix_tokens=2048)
        rng.shuffle(groups)
        collate = PrefixGroupCollator(pad)
        batches = [(collate([g.to_row()]), g.real_tokens, g.computed_tokens, len(g.suffix_ids)) for g in groups]
    else:
        order = list(rows)
        rng.shuffle(order)
        collate = PadCollator(pad)
        batches, chunk = [], []
        # Up to 4 records and 4,096 padded tokens a batch: 4 x 2,048 fp32 tokens ran out of 23 GB.
        for row in order + [None]:
            if chunk and (row is None or len(chunk) == 4 or (len(chunk) + 1) * max(r["length"] for r in [*chunk, row]) > 4096):
                tokens = sum(r["length"] for r in chunk)
                batches.append((collate(chunk), tokens, tokens, len(chunk)))
                chunk = []
            if row is not None:
                chunk.append(row)
    real = computed = records = 0
    done = 0
    start = None
    for index, (batch, real_tokens, computed_tokens, n) in enumerate(batches):
        if index == 1:  # the first batch warms up kernels and the allocator; not counted
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, scored, _ = completion_loss_sum(model, batch)
        (loss / max(scored, 1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if start is None:
            continue
        real, computed, records, done = real + real_tokens, computed + computed_tokens, records + n, done + 1
        if time.perf_counter() - start >= seconds:
            break
    elapsed = time.perf_counter() - (start or time.perf_counter())
    return {
        "setting": name,
        **setting,
        "precision": precision,
        "batches": done,
        "records": records,
        "real_tokens": real,
        "computed_tokens": computed,
        "seconds": round(elapsed, 1),
        "real_tok_s": round(real / elapsed, 1) if elapsed else None,
        "computed_tok_s": round(computed / elapsed, 1) if elapsed else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dbs", type=int, default=3, help="Spider training databases whose pairs are used.")
    parser.add_argument("--seconds", type=float, default=150.0, help="Timed training per setting.")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"Comma-separated subset of {', '.join(SETTINGS)}.")
    parser.add_argument("--format", default="ddl", choices=["ddl", "compact"], help="RouteConfig.schema_format of the prompts.")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="Append the results as JSON lines here.")
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from finetune.config import TrainConfig
    from finetune.training.train import build_training_set, resolve_base_model

    base = resolve_base_model(None)
    tokenizer = AutoTokenizer.from_pretrained(base)
    records, dbs = _records(args.dbs, args.seed, args.format)
    rows, mix = build_training_set(records, tokenizer, TrainConfig(max_length=args.max_length, truncation="truncate"))
    tokens = sum(r["length"] for r in rows)
    prompt = sum(sum(1 for x in r["labels"] if x == -100) for r in rows)
    header = {
        "cpu": _cpu(), "threads": torch.get_num_threads(), "databases": dbs, "schema_format": args.format,
        "records": len(rows), "tokens": tokens, "prompt_share": round(prompt / tokens, 3), "mix": mix.to_dict()["taken"],
    }
    print(json.dumps(header), flush=True)
    for name in [s.strip() for s in args.settings.split(",") if s.strip()]:
        if name not in SETTINGS:
            parser.error(f"unknown setting {name!r}; choose from {', '.join(SETTINGS)}")
        result = {**_measure(name, rows, tokenizer, base, args.seconds, args.seed), "schema_format": args.format}
        print(json.dumps(result), flush=True)
        if args.out:
            with Path(args.out).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({**header, **result}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
