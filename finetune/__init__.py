"""MSFT for route-graph: ROUTE's multitask fine-tuning data, noisy-pair filtering, SFT and export.

Training shares the graph's prompts, schema renderings, linking and execution code
(``route_graph``), so a fine-tuned model sees exactly the text MCP shows it. Heavy dependencies
(torch, transformers, peft, datasets) load only when ``train``/``merge_adapter``/
``build_tiny_model`` run, so importing the package stays light.
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
from finetune.export import check_adapter, merge_adapter
from finetune.filtering import (
    Dropped,
    FilterReport,
    check_gold,
    filter_examples,
    judge_pairs,
)
from finetune.pipeline import run_all
from finetune.records import Record, read_jsonl, write_jsonl
from finetune.synthesis import Synthesizer, SynthReport
from finetune.tiny import build_tiny_model
from finetune.train import (
    train,  # the function; the module stays importable as finetune.train
)

__all__ = [
    "CORRUPTION_KINDS",
    "TASKS",
    "Corruption",
    "Dropped",
    "ExportConfig",
    "FilterConfig",
    "FilterReport",
    "Record",
    "RunConfig",
    "SynthConfig",
    "SynthReport",
    "Synthesizer",
    "TrainConfig",
    "build_tiny_model",
    "check_adapter",
    "check_gold",
    "corrupt_sql",
    "filter_examples",
    "judge_pairs",
    "load_config",
    "merge_adapter",
    "read_jsonl",
    "run_all",
    "train",
    "write_jsonl",
]
