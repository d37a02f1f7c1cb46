"""MSFT for route-graph: ROUTE's multitask fine-tuning data, noisy-pair filtering, SFT and export.

Training shares the graph's prompts, schema renderings, linking and execution code
(``route_graph``), so a fine-tuned model sees exactly the text MCP shows it. Heavy dependencies
(torch, transformers, peft, datasets) load only inside ``train``/``export``/``tiny``.
"""

from __future__ import annotations

from finetune.config import (
    TASKS,
    ExportConfig,
    FilterConfig,
    RunConfig,
    SynthConfig,
    TrainConfig,
    load_config,
)
from finetune.corruption import CORRUPTION_KINDS, Corruption, corrupt_sql
from finetune.filtering import (
    Dropped,
    FilterReport,
    check_gold,
    filter_examples,
    judge_pairs,
)
from finetune.records import Record, read_jsonl, write_jsonl
from finetune.synthesis import Synthesizer, SynthReport

__all__ = [
    "TASKS",
    "RunConfig",
    "FilterConfig",
    "SynthConfig",
    "TrainConfig",
    "ExportConfig",
    "load_config",
    "Record",
    "read_jsonl",
    "write_jsonl",
    "Synthesizer",
    "SynthReport",
    "CORRUPTION_KINDS",
    "Corruption",
    "corrupt_sql",
    "check_gold",
    "judge_pairs",
    "filter_examples",
    "FilterReport",
    "Dropped",
    "train",
    "merge_adapter",
    "check_adapter",
    "build_tiny_model",
    "run_all",
]


def __getattr__(name: str):  # lazy: torch & co. load only when training/exporting
    if name == "train":
        from finetune.train import train

        return train
    if name in ("merge_adapter", "check_adapter"):
        from finetune import export

        return getattr(export, name)
    if name == "build_tiny_model":
        from finetune.tiny import build_tiny_model

        return build_tiny_model
    if name == "run_all":
        from finetune.pipeline import run_all

        return run_all
    raise AttributeError(f"module 'finetune' has no attribute {name!r}")
