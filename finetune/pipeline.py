"""The whole MSFT run as resumable steps: filter -> synth -> train -> export, under one directory.

Each step writes its artefact atomically and is skipped when that artefact exists (``force``
redoes it), and training resumes from its latest checkpoint, so an interrupted
``route-finetune run`` is continued by running the same command again. Layout::

    OUTPUT_DIR/run_config.json            the resolved configuration
    OUTPUT_DIR/filter/filter_report.json  dropped pairs + reasons, kept ids
    OUTPUT_DIR/filter/filtered.json       the split without the dropped pairs (same format)
    OUTPUT_DIR/data/records.jsonl         MSFT records (TRL prompt/completion)
    OUTPUT_DIR/data/synth_report.json     per-task counts, NC balance, skips
    OUTPUT_DIR/data/mined.jsonl           NC records from a model's own SQL (``mine``, not a run step:
                                          it needs a model; ``train.extra_records`` brings them in)
    OUTPUT_DIR/train/                     checkpoints/, adapter/ (or model/), logs, summary
    OUTPUT_DIR/merged/                    standalone model: load_chat_model(path), vllm serve path
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from finetune.config import RunConfig, config_to_dict
from route_graph.errors import ConfigError, DataError
from route_graph.evaluation.datasets import Dataset, Example, load_dataset
from route_graph.sql.database import Database
from route_graph.sql.opening import open_database

__all__ = [
    "STEPS", "DatabasePool", "RunPaths", "default_split", "load_examples", "run_all", "run_export", "run_filter",
    "run_mine", "run_synth", "run_train", "training_records",
]

Step = Literal["filter", "synth", "train", "export"]
STEPS: tuple[Step, ...] = ("filter", "synth", "train", "export")


@dataclass(frozen=True)
class RunPaths:
    """Where each step of a run writes."""

    root: Path

    @property
    def filter_report(self) -> Path:
        return self.root / "filter" / "filter_report.json"

    @property
    def filtered_split(self) -> Path:
        return self.root / "filter" / "filtered.json"

    @property
    def records(self) -> Path:
        return self.root / "data" / "records.jsonl"

    @property
    def synth_report(self) -> Path:
        return self.root / "data" / "synth_report.json"

    @property
    def mined(self) -> Path:
        return self.root / "data" / "mined.jsonl"

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def merged_dir(self) -> Path:
        return self.root / "merged"


class DatabasePool:
    """Opens each database of a dataset once (schema and sample rows are cached on it)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._open: dict[str, Database] = {}
        self._lock = threading.Lock()

    def __call__(self, db_id: str) -> Database:
        with self._lock:
            if db_id not in self._open:
                self._open[db_id] = open_database(self.dataset.db_path(db_id))
            return self._open[db_id]


def default_split() -> Path:
    """Spider's training split: $ROUTE_GRAPH_DATA/spider_train/train.json, else ../shared/data/..."""
    env = os.environ.get("ROUTE_GRAPH_DATA")
    candidates = [Path(env) / "spider_train" / "train.json"] if env else []
    candidates.append(Path.cwd().parent / "shared" / "data" / "spider_train" / "train.json")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataError(
        "No training split given and none found at " + " or ".join(map(str, candidates))
        + "; pass --data PATH/train.json (Spider/BIRD format) or set ROUTE_GRAPH_DATA."
    )


def load_examples(cfg: RunConfig) -> tuple[Dataset, list[Example]]:
    """The configured split (seeded sample of ``limit`` pairs) and its databases."""
    split = Path(os.path.expandvars(cfg.data)).expanduser() if cfg.data else default_split()
    db_dir = Path(os.path.expandvars(cfg.db_dir)).expanduser() if cfg.db_dir else None
    dataset = load_dataset(None, split, limit=cfg.limit, sample_seed=cfg.seed, db_dir=db_dir)
    return dataset, list(dataset.examples)


def _say(message: str) -> None:
    print(f"[route-finetune] {message}", file=sys.stderr, flush=True)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def run_filter(cfg: RunConfig, dataset: Dataset, examples: Sequence[Example], paths: RunPaths, *, force: bool = False) -> list[Example]:
    """Drop broken pairs (and, with a judge model, rejected ones); returns the kept examples."""
    from finetune.data.filtering import filter_examples, write_filtered_split

    if paths.filter_report.is_file() and not force:
        kept_ids = set(json.loads(paths.filter_report.read_text(encoding="utf-8"))["kept_ids"])
        _say(f"filter: reusing {paths.filter_report} ({len(kept_ids)} kept)")
        return [e for e in examples if e.id in kept_ids]
    judge = None
    if cfg.filter.judge_model:
        from route_graph.models import load_chat_model

        judge = load_chat_model(cfg.filter.judge_model)
    report = filter_examples(examples, DatabasePool(dataset), cfg.view_config(), cfg.filter, judge=judge)
    _write_json(paths.filter_report, report.to_dict())
    write_filtered_split(dataset.split_path, [e.id for e in report.kept], paths.filtered_split)
    summary = report.to_dict()
    _say(f"filter: kept {summary['kept']}, dropped {summary['dropped']} {summary['by_reason']} -> {paths.filter_report}")
    for d in report.dropped:
        _say(f"  dropped #{d.example_id} ({d.db_id}, {d.reason}): {d.detail[:120]}")
    return report.kept


def run_synth(
    cfg: RunConfig,
    dataset: Dataset,
    examples: Sequence[Example],
    records_path: Path,
    report_path: Path,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Synthesize the MSFT records of ``examples`` (plus model-sampled NC records if configured)."""
    from finetune.data.records import write_jsonl
    from finetune.data.sampling import SampleReport, sample_nc_records
    from finetune.data.synthesis import Synthesizer, SynthReport

    if records_path.is_file() and report_path.is_file() and not force:
        _say(f"synth: reusing {records_path}")
        return json.loads(report_path.read_text(encoding="utf-8"))
    view = cfg.view_config()
    pool = DatabasePool(dataset)
    report = SynthReport()
    records = list(Synthesizer(view, cfg.synth, seed=cfg.seed).run(examples, pool, report))
    summary = report.to_dict()
    if cfg.synth.sample_model:
        from route_graph.models import load_chat_model

        llm = load_chat_model(cfg.synth.sample_model, temperature=cfg.synth.sample_temperature)
        chosen = list(examples)[: cfg.synth.sample_limit] if cfg.synth.sample_limit else list(examples)
        sampled = SampleReport()
        records.extend(sample_nc_records(chosen, pool, llm, view, cfg.synth, sampled))
        summary["model_samples"] = sampled.to_dict()
    written = write_jsonl(records, records_path)
    summary["records_written"] = written
    summary["source"] = str(dataset.split_path)
    _write_json(report_path, summary)
    _say(f"synth: {written} records {summary['by_task']} in {summary['seconds']} s -> {records_path}")
    return summary


def _same_training(summary_path: Path, cfg: RunConfig) -> bool:
    """The finished training in ``summary_path`` used this run's training settings."""
    from dataclasses import asdict

    from finetune.training.checkpoints import NOT_IN_KEY

    done = json.loads(summary_path.read_text(encoding="utf-8")).get("config", {})
    wanted = asdict(cfg.train)
    ignored = NOT_IN_KEY - {"extra_records"}  # other records added: other data, train again
    return all(done.get(k) == v for k, v in wanted.items() if k not in ignored)


def training_records(cfg: RunConfig, records: Sequence[str | Path]) -> list[Path]:
    """``records`` plus the config's ``train.extra_records`` (e.g. mined NC records), each checked to exist."""
    extra = [Path(os.path.expandvars(p)).expanduser() for p in cfg.train.extra_records or ()]
    missing = [str(p) for p in extra if not p.is_file()]
    if missing:
        raise DataError(
            f"train.extra_records names {', '.join(missing)}, which does not exist; run `route-finetune mine` "
            "first (it writes OUTPUT_DIR/data/mined.jsonl) or fix the path."
        )
    return [Path(p) for p in records] + extra


def run_train(cfg: RunConfig, paths: RunPaths, *, force: bool = False) -> Path | None:
    """Train on the run's records (resuming from the latest checkpoint); returns adapter/model dir.

    None when training stopped at its deadline (the same command continues it).
    """
    from finetune.training.train import train

    final = paths.train_dir / ("adapter" if cfg.train.method == "lora" else "model")
    summary = paths.train_dir / "train_summary.json"
    if summary.is_file() and final.is_dir() and not force:
        if _same_training(summary, cfg):
            _say(f"train: reusing {final}")
            return final
        _say(f"train: the training settings changed since {final} was trained; training again")
    result = train(training_records(cfg, [paths.records]), paths.train_dir, cfg.train)
    if not result.finished:
        _say(f"train: stopped at the deadline after {result.steps} steps; run the same command again to continue")
        return None
    _say(f"train: {result.steps} steps, loss {result.train_loss}, {result.seconds:.0f} s -> {final}")
    return final


def run_export(cfg: RunConfig, paths: RunPaths, *, force: bool = False) -> Path:
    """Merge the adapter into a standalone model (LoRA with ``export.merge``); else check it."""
    from finetune.training.export import check_adapter, merge_adapter

    if cfg.train.method == "full":
        return paths.train_dir / "model"
    adapter = paths.train_dir / "adapter"
    if not cfg.export.merge:
        check_adapter(adapter)
        _say(f"export: adapter {adapter} is servable by vLLM (--enable-lora)")
        return adapter
    if (paths.merged_dir / "route-finetune.json").is_file() and not force:
        _say(f"export: reusing {paths.merged_dir}")
        return paths.merged_dir
    out = merge_adapter(adapter, paths.merged_dir, dtype=cfg.export.dtype)
    _say(f"export: merged model -> {out}")
    return out


def run_mine(
    cfg: RunConfig,
    dataset: Dataset,
    examples: Sequence[Example],
    model: str,
    output: Path,
    *,
    limit: int | None = None,
    skip: int = 0,
    batch_size: int = 1,
) -> dict[str, Any]:
    """NC records from ``model``'s own SQL on ``examples`` (the filtered split), appended to
    ``output``; resumable (finetune.data.mining). The examples are taken in a seeded order (the
    run's ``seed``: databases mixed, so a slice is not one database), then ``skip`` and ``limit``."""
    import random

    from finetune.data.mining import Miner, mine_to_file
    from route_graph.models import load_chat_model

    if skip < 0 or (limit is not None and limit < 0):
        raise ConfigError(f"--skip and --limit must be >= 0, got skip={skip}, limit={limit}.")
    order = list(examples)
    random.Random(f"mine:{cfg.seed}").shuffle(order)
    chosen = order[skip : None if limit is None else skip + limit]
    identity = {
        "model": model, "seed": cfg.seed, "route": cfg.route, "synth": config_to_dict(cfg.synth),
        "source": str(dataset.split_path),
    }
    llm = load_chat_model(model)
    miner = Miner(llm, cfg.view_config(), cfg.synth, seed=cfg.seed, batch_size=batch_size)
    _say(f"mine: {len(chosen)} examples (of {len(order)}, skip {skip}) with {model} -> {output}")
    report = mine_to_file(miner, chosen, DatabasePool(dataset), output, identity=identity, progress=lambda m: _say(f"mine: {m}"))
    _say(f"mine: {report.summary()}")
    return {"output": str(output), **report.to_dict()}


def run_all(cfg: RunConfig, *, until: Step = "export", force: Sequence[Step] = ()) -> dict[str, Any]:
    """Every step up to ``until``; finished steps are reused unless named in ``force``."""
    paths = RunPaths(Path(cfg.output_dir).expanduser())
    paths.root.mkdir(parents=True, exist_ok=True)
    _write_json(paths.root / "run_config.json", config_to_dict(cfg))
    dataset, examples = load_examples(cfg)
    kept = run_filter(cfg, dataset, examples, paths, force="filter" in force)
    summary: dict[str, Any] = {"output_dir": str(paths.root), "examples": len(examples), "kept": len(kept)}
    if until == "filter":
        return summary
    summary["synth"] = {k: v for k, v in run_synth(cfg, dataset, kept, paths.records, paths.synth_report, force="synth" in force).items() if k != "skipped"}
    if until == "synth":
        return summary
    trained = run_train(cfg, paths, force="train" in force)
    summary["trained"] = str(trained) if trained else None
    if trained is None:
        summary["stopped_at_deadline"] = True
        return summary
    if until == "train":
        return summary
    summary["exported"] = str(run_export(cfg, paths, force="export" in force))
    return summary
