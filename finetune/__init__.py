"""MSFT for route-graph: ROUTE's multitask fine-tuning data, noisy-pair filtering, SFT and export.

Training renders every prompt through ``route_graph.views`` (holding a ``ViewConfig``), the same
composition the graph's stages call, and uses route_graph's linking and execution code, so a
fine-tuned model sees exactly the text MCP shows it. finetune never imports a graph module (the
graph's nodes, state, context or ``RouteConfig``; tests/test_layering.py enforces it).

Layout: ``data/`` (filtering, synthesis, corruption, sampling, mining: the records), ``training/``
(encoding, mixing, train, checkpoints, phases, export), ``gpu/`` (training on a remote GPU machine
without network access); ``config`` (every knob, one file per run), ``pipeline`` (the resumable
run) and ``cli`` (``route-finetune``) at the top. Heavy dependencies (torch, transformers, peft,
datasets) load only when ``train``/``merge_adapter``/``build_tiny_model`` run, so importing the
package stays light.
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
from finetune.data.corruption import CORRUPTION_KINDS, Corruption, corrupt_sql
from finetune.data.filtering import (
    Dropped,
    FilterReport,
    check_gold,
    filter_examples,
    judge_pairs,
)
from finetune.data.records import Record, read_jsonl, write_jsonl
from finetune.data.synthesis import Synthesizer, SynthReport
from finetune.pipeline import run_all
from finetune.training.export import check_adapter, merge_adapter
from finetune.training.tiny import build_tiny_model
from finetune.training.train import (
    train,  # the function; the module is finetune.training.train
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
