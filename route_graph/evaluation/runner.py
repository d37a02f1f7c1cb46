"""Run the graph over a dataset: concurrent, resumable, one JSON line per answered question.

A run lives in one output directory:

* ``run.json``: the settings (compared on restart: resuming with different settings is an
  error, not a silent mix) and one entry per session (wall time, questions, concurrency);
* ``predictions.jsonl``: one record per question, appended and flushed as soon as it is
  scored, so a killed run loses at most the questions in flight; a restart skips the ids
  already there (a torn last line is dropped);
* ``summary.json`` and ``report.md`` (+ PNG plots), rebuilt from all predictions at the end.

Concurrency: ``concurrency`` questions are in flight at once (a thread pool of ``graph.invoke``,
what ``graph.batch(max_concurrency=K)`` does, but writing each answer as it completes). With the
in-process local model, concurrent calls are micro-batched into one padded ``generate``, which
is the main throughput lever on CPU. Each database gets its own compiled graph, and a separate
read-only ``Database`` for scoring gold and predicted SQL.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from route_graph.errors import ConfigError, PromptTooLongError, RouteGraphError
from route_graph.evaluation.attribution import question_attribution
from route_graph.evaluation.datasets import Dataset, Example, load_dataset
from route_graph.evaluation.hardness import spider_hardness
from route_graph.evaluation.metrics import ExecutionScorer, ScoringOptions
from route_graph.evaluation.report import write_report
from route_graph.evaluation.summary import read_predictions, summarize
from route_graph.graph import build_route_graph
from route_graph.graph.context import STAGE_NAMES, RouteConfig
from route_graph.graph.extras import Extra, former_values, parse_overrides
from route_graph.graph.stages import FINALIZE
from route_graph.models.spec import DEFAULT_MODEL, concrete_spec
from route_graph.sql.database import Database
from route_graph.sql.opening import open_database

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from route_graph.graph.state import TraceEntry

__all__ = [
    "PREDICTIONS", "REPORT", "RUN_FILE", "SUMMARY", "EvalSettings", "RunResult", "recorded_model", "run_eval", "seed_run"]

PREDICTIONS = "predictions.jsonl"
RUN_FILE = "run.json"
SUMMARY = "summary.json"
REPORT = "report.md"

Mode = Literal["single", "mcp"]

# Settings that do not change answers may differ between sessions of one run.
_RESUMABLE = {"concurrency", "progress"}


@dataclass(frozen=True)
class EvalSettings:
    """What ``route-sql eval`` was asked to do; everything but ``concurrency`` must match on resume."""

    data: str | None
    split: str
    limit: int | None = None
    sample_seed: int = 0
    mode: Mode = "mcp"
    stages: str | None = None  # mcp only; default "sl,nc,cw,rescue"
    model: str | None = None  # load_chat_model spec; None = offline default
    concurrency: int = 1
    db_dir: str | None = None
    timeout_s: float = 10.0
    max_rows: int = 100_000
    semantics: Literal["auto", "spider", "bird"] = "auto"
    float_decimals: int = 6
    ves_repeats: int | None = None  # None = 10 for BIRD-format data, 0 (off) otherwise
    prompt_style: Literal["zero_shot", "few_shot"] = "zero_shot"
    # RouteConfig fields as FIELD=VALUE (``--set``), applied after --stages and --prompt-style; an
    # extra's former field (self_consistency=5, value_retrieval=true) builds that extra in.
    config_overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in ("single", "mcp"):
            raise ConfigError(f"--mode must be 'single' or 'mcp', got {self.mode!r}.")
        if self.mode == "single" and self.stages:
            raise ConfigError("--stages applies to --mode mcp; --mode single runs one TS prompt on the full schema.")
        if self.concurrency < 1:
            raise ConfigError(f"--concurrency must be >= 1, got {self.concurrency}.")
        if self.semantics not in ("auto", "spider", "bird"):
            raise ConfigError(f"--ex-semantics must be auto, spider or bird, got {self.semantics!r}.")
        self.route_config()  # validates stages and prompt style

    @property
    def stages_effective(self) -> str:
        """Stages switched on: '' for single-pass, else the (normalised) --stages list."""
        if self.mode == "single":
            return ""
        names = {s.strip().lower() for s in (self.stages or ",".join(STAGE_NAMES)).split(",") if s.strip()}
        return ",".join(s for s in STAGE_NAMES if s in names)

    def route_config(self) -> RouteConfig:
        """The graph configuration of this run."""
        config = RouteConfig(prompt_style=self.prompt_style).with_stages(self.stages_effective)
        return replace(config, **parse_overrides(self.config_overrides)[0])

    def extras(self) -> tuple[Extra, ...]:
        """The extras this run builds into its graphs (``--set self_consistency=5`` and the like)."""
        return parse_overrides(self.config_overrides)[1]

    def scoring(self, dataset: Dataset) -> ScoringOptions:
        """How answers are scored; 'auto' picks BIRD's rules (and VES) for BIRD-format data."""
        bird = dataset.format == "bird"
        semantics = self.semantics if self.semantics != "auto" else ("bird" if bird else "spider")
        repeats = self.ves_repeats if self.ves_repeats is not None else (10 if bird else 0)
        return ScoringOptions(
            timeout_s=self.timeout_s,
            max_rows=self.max_rows,
            semantics=semantics,
            float_decimals=self.float_decimals,
            ves_repeats=repeats,
        )

    def record(self, dataset: Dataset) -> dict[str, Any]:
        """JSON form saved in run.json (with what the dataset resolved to)."""
        out = asdict(self)
        out["model"] = concrete_spec(self.model)  # the model itself, not 'default' (which may change)
        for key in ("data", "db_dir"):  # the same run, whatever directory the command runs from
            if out[key] is not None:
                out[key] = str(Path(out[key]).expanduser().resolve())
        out["config_overrides"] = list(self.config_overrides)  # as run.json holds it
        if not self.config_overrides:
            del out["config_overrides"]  # runs from before --set existed resume as they were
        out["stages_effective"] = self.stages_effective
        out["split_path"] = str(dataset.split_path)
        out["dataset_format"] = dataset.format
        out["selected"] = len(dataset.examples)
        out["scoring"] = asdict(self.scoring(dataset))
        # With the extras' settings under their former field names, as runs recorded them before extras.
        out["route_config"] = {**asdict(self.route_config()), **former_values(self.extras())}
        return out


@dataclass(frozen=True)
class RunResult:
    """Where a run wrote its files, and its summary."""

    out_dir: Path
    summary: dict[str, Any]
    new_questions: int  # answered in this session (the rest were resumed)

    @property
    def predictions(self) -> Path:
        return self.out_dir / PREDICTIONS

    @property
    def report(self) -> Path:
        return self.out_dir / REPORT


# --------------------------------------------------------------------------- run directory


def _check_resume(out_dir: Path, settings: dict[str, Any], overwrite: bool) -> list[dict[str, Any]]:
    """Validate (or reset) an existing run directory; return its earlier sessions."""
    run_file = out_dir / RUN_FILE
    if overwrite:
        for name in (RUN_FILE, PREDICTIONS, SUMMARY, REPORT):
            (out_dir / name).unlink(missing_ok=True)
        for png in out_dir.glob("*.png"):
            png.unlink()
        return []
    if not run_file.is_file():
        if (out_dir / PREDICTIONS).is_file():
            raise ConfigError(
                f"{out_dir} holds {PREDICTIONS} but no {RUN_FILE}, so its settings are unknown; "
                "use a new --out directory or pass --overwrite to start again."
            )
        return []
    try:
        saved = json.loads(run_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{run_file} is corrupt ({exc}); pass --overwrite to start again.") from exc
    diffs = _settings_diffs(saved.get("settings", {}), settings)
    if diffs:
        raise ConfigError(
            f"{out_dir} holds a run with different settings ({'; '.join(diffs)}). Rerun with the same "
            "settings to resume it, choose another --out, or pass --overwrite to start again."
        )
    return list(saved.get("sessions", []))


def recorded_model(saved: dict[str, Any]) -> str:
    """The model a stored run's settings name: runs recorded before records named the model
    ('default' or nothing) ran the untuned base, whatever 'default' means today."""
    model = saved.get("model")
    return DEFAULT_MODEL if model in (None, "default") else str(model)


def _settings_diffs(saved: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """What differs between a stored run's settings and these, apart from what a resume may change."""
    old = dict(saved)
    old["model"] = recorded_model(saved)
    if isinstance(old.get("route_config"), dict):
        # A RouteConfig field added after the run was recorded defaults to the behaviour it had before
        # the field existed (the convention for every new switch), so the record's silence is that default.
        old["route_config"] = {**asdict(RouteConfig()), **old["route_config"]}
    return [
        f"{key}: {old.get(key)!r} then, {settings.get(key)!r} now"
        for key in sorted(set(old) | set(settings))
        if key not in _RESUMABLE and old.get(key) != settings.get(key)
    ]


def seed_run(stored_dir: str | os.PathLike[str], settings: EvalSettings, out_dir: str | os.PathLike[str]) -> int:
    """Start the run ``settings`` in ``out_dir`` with the answers of ``stored_dir``, a run of the same
    settings on a smaller sample; ``run_eval`` then asks only the rest. Returns the answers copied.

    Why: the evaluation standard extends a borderline 400-question result to all 1,042 questions,
    and re-asking the 400 costs 30-50 min of 2-core CPU per side for answers already stored."""
    stored, out = Path(stored_dir), Path(out_dir).expanduser().resolve()
    if not (stored / RUN_FILE).is_file() or not (stored / PREDICTIONS).is_file():
        raise ConfigError(f"{stored} is not an evaluation run (no {RUN_FILE} / {PREDICTIONS}); name a run directory.")
    if (out / RUN_FILE).exists() or (out / PREDICTIONS).exists():
        raise ConfigError(f"{out} already holds a run; seed a new --out directory.")
    saved = json.loads((stored / RUN_FILE).read_text(encoding="utf-8"))
    dataset = load_dataset(
        settings.data, settings.split, limit=settings.limit, sample_seed=settings.sample_seed, db_dir=settings.db_dir
    )
    new = settings.record(dataset)
    sample_size = {"limit": new["limit"], "selected": new["selected"]}
    diffs = _settings_diffs({**saved.get("settings", {}), **sample_size}, new)
    if diffs:
        raise ConfigError(f"{stored} was run with other settings than these ({'; '.join(diffs)}); it cannot seed them.")
    records = list(read_predictions(stored / PREDICTIONS))
    sample = {e.id for e in dataset.examples}
    outside = sorted(int(r["id"]) for r in records if int(r["id"]) not in sample)
    if outside:
        raise ConfigError(
            f"{len(outside)} of {stored}'s questions (ids {outside[:5]}...) are not in the new sample; "
            "seed only a larger sample with the same seed, or all questions (--limit equal to the split's size)."
        )
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(stored / PREDICTIONS, out / PREDICTIONS)  # byte for byte (a torn last line is dropped on resume)
    sessions = [{**session, "seeded_from": str(stored.resolve())} for session in saved.get("sessions", [])]
    _write_run_file(out, new, sessions)
    return len(records)


def _repair_predictions(path: Path) -> set[int]:
    """Ids already answered; rewrites the file without a torn last line (killed mid-write)."""
    if not path.is_file():
        return set()
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        keep = raw[: raw.rfind(b"\n") + 1]
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_bytes(keep)
        os.replace(tmp, path)
    return {int(r["id"]) for r in read_predictions(path) if "id" in r}


def _write_run_file(out_dir: Path, settings: dict[str, Any], sessions: list[dict[str, Any]]) -> None:
    tmp = out_dir / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps({"settings": settings, "sessions": sessions}, indent=2), encoding="utf-8")
    os.replace(tmp, out_dir / RUN_FILE)


# --------------------------------------------------------------------------- progress


class _Progress:
    """tqdm when available (and wanted), else a plain line every few questions on stderr."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.total, self.done, self.correct, self.scored = total, done, 0, 0
        self.enabled = enabled
        self._bar = None
        self._last = 0.0
        if enabled:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, initial=done, unit="q", desc="eval", dynamic_ncols=True)
            except ImportError:
                self._bar = None

    def update(self, record: dict[str, Any]) -> None:
        self.done += 1
        if record.get("status") != "gold_error":
            self.scored += 1
            self.correct += bool(record.get("correct"))
        ex = f"{100 * self.correct / self.scored:.1f}%" if self.scored else "–"
        if self._bar is not None:
            self._bar.set_postfix_str(f"EX(session)={ex}", refresh=False)
            self._bar.update(1)
        elif self.enabled and (time.monotonic() - self._last > 10 or self.done == self.total):
            self._last = time.monotonic()
            print(f"[{self.done}/{self.total}] EX(session)={ex}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# --------------------------------------------------------------------------- scoring one question


def _base_record(example: Example, eval_db: Database) -> dict[str, Any]:
    return {
        "id": example.id,
        "db_id": example.db_id,
        "question": example.question,
        "hint": example.hint,
        "gold_sql": example.gold_sql,
        "hardness": spider_hardness(example.gold_sql, eval_db.dialect),
        "difficulty": example.difficulty,
    }


def score_output(
    example: Example,
    output: dict[str, Any] | BaseException,
    eval_db: Database,
    options: ScoringOptions,
    wall_s: float,
) -> dict[str, Any]:
    """The predictions.jsonl record of one answered (or crashed) question."""
    record = _base_record(example, eval_db)
    scorer = ExecutionScorer(eval_db, example.gold_sql, options)
    if isinstance(output, BaseException):
        outcome = scorer.score(None)
        record.update(
            pred_sql="",
            winner=None,
            status="gold_error" if outcome.status == "gold_error" else "graph_error",
            correct=outcome.correct,
            ex={**outcome.to_dict(), "error_kind": "graph_error", "error": f"{type(output).__name__}: {output}"},
            stage_sql={"final": ""},
            executions={},
            cost={},
            cost_by_stage={},
            trace=[],
            error=f"{type(output).__name__}: {output}",
            wall_s=round(wall_s, 3),
        )
        return record
    pred_sql = (output.get("sql") or "").strip()
    outcome = scorer.score(pred_sql)
    trace: list[TraceEntry] = list(output.get("trace") or [])
    final = next((e for e in trace if e.get("stage") == FINALIZE.node), {})
    record.update(
        pred_sql=pred_sql,
        winner=output.get("stage"),
        fallback=bool(final.get("fallback")),
        status=outcome.status,
        correct=outcome.correct,
        ex=outcome.to_dict(),
        ves=scorer.ves(pred_sql) if options.ves_repeats else None,
        **question_attribution(output, scorer, eval_db),
        trace=trace,
        wall_s=round(wall_s, 3),
    )
    return record


# --------------------------------------------------------------------------- the run


def _timed_invoke(graph: Any, example: Example, config: RouteConfig) -> tuple[dict[str, Any] | BaseException, float]:
    start = time.perf_counter()
    try:
        output: dict[str, Any] | BaseException = graph.invoke(
            {"question": example.question, "hint": example.hint}, context=config
        )
    except PromptTooLongError as exc:  # this question's schema is too big: record it, go on
        output = exc
    except RouteGraphError:
        raise  # a broken model or configuration: stop the run instead of recording 1000 failures
    except Exception as exc:  # noqa: BLE001 - one question's crash is recorded, the run goes on
        output = exc
    return output, time.perf_counter() - start


def _windowed(
    pool: cf.ThreadPoolExecutor,
    items: list[Example],
    submit: Callable[[cf.ThreadPoolExecutor, Example], cf.Future],
    window: int,
) -> Iterator[tuple[Example, cf.Future]]:
    """Submit at most ``window`` items ahead and yield them as they complete."""
    pending: dict[cf.Future, Example] = {}
    queue = iter(items)
    for example in queue:
        pending[submit(pool, example)] = example
        if len(pending) >= window:
            break
    while pending:
        done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        # Submission order, not set order: when several finish together, an earlier question's
        # answer is written before a later one's crash (Ctrl-C) ends the run.
        for future in [f for f in pending if f in done]:
            example = pending.pop(future)
            nxt = next(queue, None)
            if nxt is not None:
                pending[submit(pool, nxt)] = nxt
            yield example, future


def run_eval(
    settings: EvalSettings,
    out_dir: str | os.PathLike[str],
    *,
    llm: BaseChatModel | None = None,
    progress: bool = True,
    overwrite: bool = False,
    plots: bool = True,
    stop_after: int | None = None,
) -> RunResult:
    """Evaluate ``settings`` into ``out_dir`` (resuming what is there); return the summary.

    ``llm`` overrides ``settings.model`` (tests pass a scripted fake). ``stop_after`` ends the
    session after that many new questions (used to test resuming; like a kill, but clean).
    """
    dataset = load_dataset(
        settings.data, settings.split, limit=settings.limit, sample_seed=settings.sample_seed, db_dir=settings.db_dir
    )
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    saved_settings = settings.record(dataset)
    sessions = _check_resume(out, saved_settings, overwrite)
    pred_path = out / PREDICTIONS
    done_ids = _repair_predictions(pred_path)
    remaining = [e for e in dataset.examples if e.id not in done_ids]
    todo = remaining if stop_after is None else remaining[:stop_after]
    _write_run_file(out, saved_settings, sessions)

    options = settings.scoring(dataset)
    config = settings.route_config()
    extras = settings.extras()
    graphs: dict[str, Any] = {}
    eval_dbs: dict[str, Database] = {}
    answered = 0
    if todo and llm is None:
        from route_graph import load_chat_model

        llm = load_chat_model(settings.model)
    # Session wall time starts here: it includes lazy weight loading on the first call, if any.
    started = _dt.datetime.now().isoformat(timespec="seconds")
    t0 = time.perf_counter()

    def graph_for(db_id: str) -> Any:
        if db_id not in graphs:
            graphs[db_id] = build_route_graph(llm, dataset.db_path(db_id), config, extras=extras)
        return graphs[db_id]

    def submit(pool: cf.ThreadPoolExecutor, example: Example) -> cf.Future:
        graph = graph_for(example.db_id)  # built in this (the main) thread
        return pool.submit(_timed_invoke, graph, example, config)

    bar = _Progress(len(dataset.examples), len(dataset.examples) - len(remaining), progress)

    def session() -> dict[str, Any]:
        return {
            "started": started,
            "questions": answered,
            "concurrency": settings.concurrency,
            "wall_s": round(time.perf_counter() - t0, 2),
        }

    try:
        with pred_path.open("a", encoding="utf-8") as handle:
            pool = cf.ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="route-eval")
            try:
                for example, future in _windowed(pool, todo, submit, 2 * settings.concurrency):
                    output, wall = future.result()
                    if example.db_id not in eval_dbs:
                        eval_dbs[example.db_id] = open_database(dataset.db_path(example.db_id))
                    record = score_output(example, output, eval_dbs[example.db_id], options, wall)
                    record["finished_at"] = _dt.datetime.now().isoformat(timespec="seconds")
                    handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                    handle.flush()
                    answered += 1
                    bar.update(record)
                    # Session so far, so that even a killed run keeps its throughput numbers.
                    _write_run_file(out, saved_settings, [*sessions, session()])
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: do not wait for queued work
                raise
            pool.shutdown(wait=True)
    finally:
        bar.close()
        if answered:
            sessions.append(session())
        _write_run_file(out, saved_settings, sessions)

    selected = {e.id for e in dataset.examples}
    records = [r for r in read_predictions(pred_path) if r.get("id") in selected]
    records.sort(key=lambda r: r["id"])
    summary = summarize(records, settings=saved_settings, sessions=sessions)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    write_report(summary, out, plots=plots)
    return RunResult(out_dir=out, summary=summary, new_questions=answered)

