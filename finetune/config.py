"""Every knob of MSFT (filter, synthesis, training, export) in dataclasses, loaded from JSON/YAML.

One file reproduces a run; ``--set section.field=value`` overrides any field from the command
line. The schema renderings and execution limits come from a nested ``ViewConfig`` (``route``: the
settings of ``route_graph.views``), so training records show exactly what the graph shows at
inference with the same settings.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from route_graph.errors import ConfigError
from route_graph.views import ViewConfig

__all__ = [
    "TASKS",
    "ExportConfig",
    "FilterConfig",
    "RunConfig",
    "SynthConfig",
    "TrainConfig",
    "apply_overrides",
    "config_to_dict",
    "load_config",
]

TASKS: tuple[str, ...] = ("ts", "sl", "nc", "cw")


def _describe(text: str, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    if default is dataclasses.MISSING:
        return field(metadata={"description": text}, **kwargs)
    return field(default=default, metadata={"description": text}, **kwargs)


@dataclass
class FilterConfig:
    """Noisy-pair filtering: which training pairs to drop before synthesis."""

    timeout_s: float | None = _describe("Gold execution limit in seconds (None: route.execution_timeout_s).", None)
    drop_empty: bool = _describe("Also drop pairs whose gold SQL returns no rows.", False)
    drop_unparseable: bool = _describe("Also drop gold SQL sqlglot cannot parse (no SL target).", False)
    judge_model: str | None = _describe(
        "Model spec (load_chat_model) that judges each pair with the NC prompt; None: no judge.", None
    )
    judge_batch_size: int = _describe("Prompts per judge batch.", 4)


@dataclass
class SynthConfig:
    """MSFT data synthesis: which tasks and variants, how NC and CW examples are made."""

    tasks: list[str] = _describe("Tasks to synthesize (subset of ts, sl, nc, cw).", default_factory=lambda: list(TASKS))
    ts_full_schema: bool = _describe("TS record on the full schema (the draft SQL of MCP step 1).", True)
    ts_reduced_schema: bool = _describe("TS record on the gold-linked schema (MCP step 2).", True)
    extra_table_prob: float = _describe(
        "Probability that the linked schema (TS reduced, CW) gets one extra unneeded table, as "
        "imperfect linking gives at inference.",
        0.3,
    )
    extra_table_counts: list[float] | None = _describe(
        "Probabilities of 0, 1, 2, ... extra unneeded tables in the linked schema (replaces "
        "extra_table_prob when set); extras joinable to a linked table (foreign key) are drawn "
        "first, as the inference linker's are. The 0.5B linker's measured mix is about "
        "[0.31, 0.37, 0.20, 0.12] (benchmarks/runs/ablation-400-base-prefill).",
        None,
    )
    nc_incorrect_ratio: float = _describe("Target share of 'incorrect' NC records.", 0.5)
    nc_corruptions: list[str] | None = _describe("Corruption kinds to use (None: all).", None)
    nc_max_tries: int = _describe("Corruptions executed per example before giving up on one.", 8)
    cw_bare_prefix_ratio: float = _describe(
        "Share of CW records whose prefix is route.continuation_prefix (what inference uses); "
        "the rest cut the gold at a random clause boundary.",
        0.5,
    )
    normalize_whitespace: bool = _describe("Collapse runs of whitespace in gold SQL (outside quotes).", True)
    sl_join_keys: bool = _describe(
        "SL targets add the foreign-key columns joining two linked tables (over-recall slightly).", True
    )
    sl_all_columns: bool = _describe(
        "SL targets keep every column of each linked table (the answer recall-first linking gives). The "
        "v2 tune, trained on gold columns + join keys, linked strictly (17% of columns kept vs 48% for "
        "the base model, strict recall 63.5% vs 79.2%) and lost EX; recall-first linking won it back.",
        False,
    )
    qualify_style: Literal["gold", "table_names"] = _describe(
        "How target SQL qualifies columns: 'table_names' rewrites Spider's T1/T2 aliases to table names "
        "where unambiguous and the result is unchanged (a tuned model then cannot mix up aliases); "
        "'gold' keeps the gold text.",
        "table_names",
    )
    string_quotes: Literal["gold", "single"] = _describe(
        "How target SQL quotes string literals: 'single' rewrites Spider's double-quoted ones "
        "(name = \"Gasoline\", a string only in SQLite) to 'Gasoline' where the rows are unchanged; phase 3d "
        "wrote them in 102 of 400 answers (base: 4), which PostgreSQL and DuckDB reject. 'gold' keeps them.",
        "gold",
    )
    timeout_s: float | None = _describe("Execution limit while synthesizing (None: route.execution_timeout_s).", None)
    sample_model: str | None = _describe(
        "Model spec whose sampled TS answers, labelled by execution, become extra NC records; None: off.", None
    )
    sample_temperature: float = _describe("Sampling temperature for sample_model.", 0.8)
    sample_limit: int | None = _describe("Examples to sample model answers for (None: all).", None)
    sample_batch_size: int = _describe("Prompts per sampling batch.", 4)


@dataclass
class TrainConfig:
    """Supervised fine-tuning: LoRA or full, data mixing, length policy, schedule, checkpoints."""

    base_model: str | None = _describe("HF model dir or hub id; None: the offline default model.", None)
    method: Literal["lora", "full"] = _describe("'lora' (adapter, rank <= 16 for vLLM) or 'full'.", "lora")
    lora_r: int = _describe("LoRA rank (vLLM serves ranks up to 16 by default).", 16)
    lora_alpha: int = _describe("LoRA alpha.", 32)
    lora_dropout: float = _describe(
        "LoRA dropout. 0 (default): peft then skips the dropout copy of every adapted layer's input.", 0.0
    )
    lora_top_layers: int | None = _describe(
        "Adapt only the top N transformer layers (None: all). Backward then stops below them.", None
    )
    init_adapter: str | None = _describe(
        "A LoRA adapter directory to start from (a committed phase, e.g. finetune/phases/1-ts-full): its "
        "weights are loaded trainable, with a fresh optimizer and this config's warm-up; its LoRA shape "
        "must equal this config's. None: a fresh adapter.",
        None,
    )
    data_sha256: str | None = _describe(
        "Expected sha256 of the encoded training rows (train_summary.json's data_sha256): set in a phase "
        "config so that another machine refuses to train when its synthesis differs. None: not checked.",
        None,
    )
    task_ratios: dict[str, float] | None = _describe(
        "Relative share of each task in the training mix, e.g. {'ts': 2, 'sl': 1}; tasks left "
        "out are not trained on. A key may name a task's variant, e.g. 'nc/model_incorrect': those "
        "records then form their own pool, apart from the task's other records. None: records as synthesized.",
        None,
    )
    extra_records: list[str] | None = _describe(
        "Record files (JSONL) added to the synthesized records before mixing, e.g. the NC records mined from "
        "the model's own SQL (`route-finetune mine`: outputs/<run>/data/mined.jsonl), which synthesis cannot "
        "make without a model. Paths relative to the working directory ($VARS and ~ expanded). Their "
        "records are training rows, so they are in data_sha256; the paths are not in the run key.",
        None,
    )
    max_records: int | None = _describe("Training records after mixing (None: as many as the ratios allow).", None)
    skip_records: int = _describe(
        "Skip this many records of each task's seeded order before taking the quota: a phase that "
        "continues another over the rest of the same data (phase A: max_records=N; phase B: skip_records=N).",
        0,
    )
    max_length: int = _describe("Max tokens per record (prompt + completion).", 1024)
    truncation: Literal["drop", "truncate"] = _describe(
        "Over-long records: 'drop' them (counted in the report), or 'truncate' them at max_length "
        "(records left with no completion token are dropped).",
        "drop",
    )
    epochs: float = _describe("Training epochs over the mixed records.", 1.0)
    max_steps: int = _describe("Stop after this many optimizer steps (-1: epochs decide).", -1)
    batch_size: int = _describe("Records per device batch.", 4)
    grad_accum: int = _describe("Gradient accumulation steps.", 1)
    learning_rate: float = _describe("Peak learning rate (LoRA ~1e-4..2e-4, full ~1e-5).", 2e-4)
    warmup_steps: float = _describe("Warm-up: steps (>= 1) or a fraction of all steps (< 1).", 0.03)
    weight_decay: float = _describe("AdamW weight decay.", 0.0)
    scheduler: str = _describe("LR schedule (transformers name).", "cosine")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = _describe(
        "'auto': bf16 where the device supports it (CUDA bf16, CPU with AMX/AVX512-BF16), else fp32.", "auto"
    )
    gradient_checkpointing: bool = _describe("Trade compute for memory.", False)
    group_by_length: bool = _describe("Batch records of similar length together (less padding).", True)
    prefix_groups: bool = _describe(
        "Records sharing a prompt prefix (same task, database, schema view) run it once per batch "
        "(finetune.training.prefix_groups; same gradients). A batch is then one group and batch_size is unused.",
        True,
    )
    prefix_group_records: int = _describe("Most records in one prefix group.", 16)
    prefix_group_tokens: int = _describe(
        "Most padded suffix tokens (records x longest suffix) in one group; with a 2,048-token prefix, "
        "2,048 suffix tokens peak at ~16 GB in fp32 on CPU.",
        2048,
    )
    logging_steps: int = _describe("Log loss every N steps.", 5)
    save_steps: int = _describe("Checkpoint every N steps.", 50)
    save_total_limit: int = _describe("Checkpoints kept.", 2)
    save_minutes: float | None = _describe("Also checkpoint after this many minutes of wall clock (None: steps only).", 15.0)
    deadline: str | None = _describe(
        "Stop with a checkpoint before this time: a duration from when training starts ('2h30m', '45m') or an ISO "
        "time. Running the same command again continues.",
        None,
    )
    checkpoint_dir: str | None = _describe(
        "Where checkpoints go (None: <cache>/train/<run key>, keyed by config, base model and data).", None
    )
    resume: str | None = _describe(
        "'auto' (latest checkpoint of this run key), a checkpoint path (refused if another run wrote "
        "it), or None.",
        "auto",
    )
    threads: int | None = _describe("CPU threads for torch (None: torch's default).", None)
    seed: int = _describe("Seed for mixing, shuffling and initialisation.", 0)


@dataclass
class ExportConfig:
    """What to ship: a merged standalone model directory and/or the adapter."""

    merge: bool = _describe("Merge the adapter into a standalone HF model directory.", True)
    dtype: Literal["bfloat16", "float16", "float32"] = _describe("Weights dtype of the merged model.", "bfloat16")


@dataclass
class RunConfig:
    """A whole MSFT run: filter -> synthesize -> train -> export, all under ``output_dir``."""

    data: str | None = _describe("Spider/BIRD-format training split (JSON list).", None)
    db_dir: str | None = _describe("Folder of <db_id>/<db_id>.sqlite (None: found next to the split).", None)
    output_dir: str = _describe("Where every artefact goes (outside the repo or git-ignored).", "outputs/msft")
    limit: int | None = _describe("Use a seeded sample of this many training pairs (None: all).", None)
    seed: int = _describe("Seed for sampling and synthesis.", 0)
    route: dict[str, Any] = _describe(
        "ViewConfig fields: what the model sees (sample rows, value cut, feedback rows, timeout, CW prefix, prompt style).",
        default_factory=dict,
    )
    filter: FilterConfig = field(default_factory=FilterConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def view_config(self) -> ViewConfig:
        """The inference settings whose renderings the records must match."""
        try:
            return ViewConfig(**self.route)
        except TypeError as exc:
            raise ConfigError(f"Unknown ViewConfig field in 'route': {exc}") from exc


# ------------------------------------------------------------------------------------- loading
def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"No config file at {path}; pass a JSON or YAML file (see configs/).")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # transformers depends on PyYAML

        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold an object of config sections.")
    return data


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check/convert a JSON value against a dataclass field annotation (small, explicit subset)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {annotation}.")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}.")
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {value!r}.")
        return _build(annotation, value, where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}.")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}.")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}.")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}.")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}.")
        return [_coerce(v, args[0], f"{where}[]") for v in value] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {value!r}.")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()} if args else value
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    data = {k: v for k, v in data.items() if not str(k).startswith("_")}  # "_comment" keys document files
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown field(s) {sorted(unknown)}; known: {sorted(names)}.")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}".lstrip(".")) for k, v in data.items()}
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain-JSON form of a config dataclass (written next to every artefact)."""
    return dataclasses.asdict(config)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # bare strings need no quotes on the command line


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.field=value`` overrides (values parsed as JSON, else taken as strings)."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"Override {item!r} must look like section.field=value (e.g. train.max_steps=3).")
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override {item!r}: {part} is not a section.")
        node[parts[-1]] = _parse_value(raw)
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """A ``RunConfig`` from a JSON/YAML file (or defaults) plus ``section.field=value`` overrides."""
    data = _read(Path(path)) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    config = _build(RunConfig, data, "")
    config.view_config()  # validate now
    unknown_tasks = set(config.synth.tasks) - set(TASKS)
    if unknown_tasks:
        raise ConfigError(f"synth.tasks: unknown task(s) {sorted(unknown_tasks)}; use {list(TASKS)}.")
    if config.train.task_ratios is not None:
        bad = {k for k in config.train.task_ratios if k.split("/", 1)[0] not in TASKS or k.endswith("/")}
        if bad or any(v < 0 for v in config.train.task_ratios.values()):
            raise ConfigError(
                f"train.task_ratios: use non-negative weights keyed by a task of {list(TASKS)} or 'task/variant' "
                f"(e.g. 'nc/model_incorrect'), got {config.train.task_ratios}."
            )
    if config.train.method == "lora" and not 1 <= config.train.lora_r <= 64:
        raise ConfigError(f"train.lora_r must be in 1..64 (vLLM's default limit is 16), got {config.train.lora_r}.")
    return config
