"""NC records from the model's own SQL, labelled by execution ("mining"): ROUTE's NC training data.

Corruptions of the gold (``synthesis``) teach what a plausible mistake looks like; ROUTE trains
noise correction on the mistakes the model itself makes. For each training example the model is
asked MCP step 2's question (the generate prompt on the linked view, built by
``Synthesizer.prepare`` exactly as the TS ``linked_schema`` record's prompt; prefilled as the graph
prefills it), its SQL runs through route_graph's read-only executor, and its rows are compared with
the gold's (EX, Spider semantics). What the graph would do next with that SQL decides the record:

- rows, the gold's rows -> the NC verdict prompt, target "correct" (variant ``model_correct``);
- rows, not the gold's -> the NC verdict prompt, target "incorrect" + the gold (``model_incorrect``);
- an error, no SQL, no rows or only NULLs -> the graph asks ``nc_repair`` (no verdict: execution
  gave it): that prompt with the problem execution found, target the gold (``model_repair``). An
  empty or NULL-only answer is mined only when the gold's own result is neither (the graph keeps a
  repair of such SQL only if it returns real rows).

The answers come from whatever model is passed: greedy, one model call per example (the CLI loads
it with temperature 0, as evaluation does). A call costs seconds on a CPU, so ``mine_to_file``
appends each example's record and outcome as soon as they exist and a restarted run skips the
examples already done.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from finetune.config import SynthConfig
from finetune.data.records import Record
from finetune.data.synthesis import PreparedExample, Synthesizer
from route_graph import prompts
from route_graph.errors import ConfigError, DataError, PromptTooLongError
from route_graph.evaluation.datasets import Example
from route_graph.evaluation.metrics import gold_order_matters, results_match
from route_graph.model_capabilities import (
    continuing_model,
    model_failure_error,
    prefill_opening,
)
from route_graph.sql.database import Database
from route_graph.sql.result import ExecutionResult
from route_graph.views import (
    ViewConfig,
    no_sql_result,
    parsing,
    repair_problem,
    stage_prefill,
)

__all__ = ["MINED_VARIANTS", "MineReport", "Mined", "Miner", "ask_prefilled", "mine_to_file", "mined_paths"]

#: The variants of mined NC records (``task_ratios`` keys ``"nc/model_incorrect"`` etc. pick them).
MINED_VARIANTS: tuple[str, ...] = ("model_correct", "model_incorrect", "model_repair")


@dataclass
class Mined:
    """One example's outcome: its record (None when skipped), the model's SQL and why."""

    example_id: int
    db_id: str
    outcome: str  # a MINED_VARIANTS entry, or "skipped"
    sql: str | None = None
    problem: str | None = None  # what execution found wrong (model_repair): error | empty | null
    reason: str | None = None  # why an example was skipped
    record: Record | None = None
    seconds: float = 0.0

    def log_line(self) -> dict[str, Any]:
        """The outcomes file's line: everything but the record (the records file holds it)."""
        return {
            "example_id": self.example_id, "db_id": self.db_id, "outcome": self.outcome, "sql": self.sql,
            "problem": self.problem, "reason": self.reason, "seconds": round(self.seconds, 3),
        }


@dataclass
class MineReport:
    """Outcome counts, skip reasons and speed of one mining run (plus what earlier runs did)."""

    model: str = ""
    examples: int = 0  # mined by this run
    already_done: int = 0  # found in the output and skipped (resume)
    outcomes: Counter = field(default_factory=Counter)
    problems: Counter = field(default_factory=Counter)
    skip_reasons: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, mined: Mined) -> None:
        self.examples += 1
        self.outcomes[mined.outcome] += 1
        if mined.problem:
            self.problems[mined.problem] += 1
        if mined.reason:
            self.skip_reasons[mined.reason.split(":")[0]] += 1

    def per_example(self) -> float | None:
        return round(self.seconds / self.examples, 2) if self.examples else None

    def summary(self) -> str:
        """The one line printed at the end of a run."""
        counts = " / ".join(f"{self.outcomes[v]} {v.removeprefix('model_')}" for v in MINED_VARIANTS)
        return (
            f"mined {self.examples} examples ({counts}, {self.outcomes['skipped']} skipped; "
            f"{self.already_done} already done) in {self.seconds:.1f} s, {self.per_example()} s/example"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "examples": self.examples,
            "already_done": self.already_done,
            "outcomes": dict(sorted(self.outcomes.items())),
            "repair_problems": dict(sorted(self.problems.items())),
            "skip_reasons": dict(sorted(self.skip_reasons.items())),
            "seconds": round(self.seconds, 2),
            "seconds_per_example": self.per_example(),
        }


class Miner:
    """Asks ``llm`` each example's generate prompt and labels its SQL by execution.

    The prompts, targets and executor are the ``Synthesizer``'s (same view, synthesis settings and
    seed), so a mined record shows what the TS records trained the model on, and what the graph
    sends at inference. ``batch_size`` > 1 sends that many prompts per ``llm.batch`` (the
    transformers engine answers them as one padded batch; the llama.cpp engine answers one at a
    time either way).
    """

    def __init__(self, llm: BaseChatModel, view: ViewConfig, cfg: SynthConfig, *, seed: int = 0, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ConfigError(f"The mining batch size must be at least 1, got {batch_size}.")
        self.llm = llm
        self.synth = Synthesizer(view, cfg, seed=seed)
        self.view = self.synth.view
        self.batch_size = batch_size

    def chunk(self, examples: Sequence[Example], open_db: Callable[[str], Database]) -> list[Mined]:
        """One model batch: the outcomes of ``examples`` (at most ``batch_size`` of them)."""
        start = time.perf_counter()
        prepared = [self.synth.prepare(example, open_db(example.db_id)) for example in examples]
        asked = [p for p in prepared if p.ok]
        answers = dict(zip((p.example.id for p in asked), ask_prefilled(self.llm, [p.generate_messages() for p in asked], stage_prefill("generate", self.view), batch_size=self.batch_size)))
        out = []
        for item in prepared:
            answer = answers.get(item.example.id)
            if not item.ok:
                mined = _skipped(item, f"gold_error: {item.gold_result.error if item.gold_result else ''}")
            elif isinstance(answer, PromptTooLongError):
                mined = _skipped(item, f"prompt_too_long: {answer}")
            else:
                mined = self.label(item, str(answer))
            out.append(mined)
        seconds = (time.perf_counter() - start) / max(1, len(out))
        for mined in out:
            mined.seconds = seconds
        return out

    def label(self, prepared: PreparedExample, answer: str) -> Mined:
        """The record the model's ``answer`` to the generate prompt makes, labelled by execution."""
        example = prepared.example
        sql = parsing.parse_sql(answer)
        result = self.synth.execute(prepared.db, sql) if sql else no_sql_result()
        feedback = self.synth.feedback(result)
        problem = repair_problem(result)
        mined = Mined(example.id, example.db_id, "skipped", sql=sql, problem=problem)
        if problem is not None:
            assert prepared.gold_result is not None  # prepared.ok
            if problem != "error" and repair_problem(prepared.gold_result) is not None:
                mined.reason = f"gold_{repair_problem(prepared.gold_result)}: the gold's result is empty or NULL too"
                return mined
            prompt = prepared.messages("nc_repair", sql=sql or "", feedback=feedback, problem=problem)
            mined.outcome = "model_repair"
            mined.record = prepared.record("nc", mined.outcome, prompt, prompts.nc_repair_completion(prepared.gold))
            return mined
        correct = self._matches(prepared, result)
        mined.outcome = "model_correct" if correct else "model_incorrect"
        prompt = prepared.messages("nc", sql=sql or "", feedback=feedback)
        answer_text = prompts.nc_completion(correct, None if correct else prepared.gold)
        mined.record = prepared.record("nc", mined.outcome, prompt, answer_text)
        return mined

    # ---------------------------------------------------------------------------- helpers
    def _matches(self, prepared: PreparedExample, result: ExecutionResult) -> bool:
        gold = prepared.gold_result
        assert gold is not None
        ordered = gold_order_matters(prepared.gold, prepared.db.dialect)
        return results_match(gold.rows, result.rows, order_matters=ordered)


def ask_prefilled(
    llm: BaseChatModel, batch: list[list[prompts.Message]], prefill: str, *, batch_size: int = 1
) -> list[str | PromptTooLongError]:
    """``llm``'s answers to ``batch``, prefilled with ``prefill`` where the backend can continue an
    answer (``model_capabilities``), as the graph asks (``route_graph.graph.calls``, which finetune
    must not import). A prompt over the context is that item's ``PromptTooLongError``; any other
    failure the user must fix stops the run (``ModelError`` with advice)."""
    if not batch:
        return []
    continuing = continuing_model(llm)
    opening = prefill_opening(llm, prefill) if continuing is not None else ""
    if continuing is not None:
        batch = [[*messages, {"role": "assistant", "content": opening}] for messages in batch]
    replies = (continuing or llm).batch(batch, {"max_concurrency": batch_size}, return_exceptions=True)
    out: list[str | PromptTooLongError] = []
    for reply in replies:
        if isinstance(reply, BaseException):
            error = reply if isinstance(reply, PromptTooLongError) else model_failure_error(reply)
            if isinstance(error, PromptTooLongError):
                out.append(error)
                continue
            if error is not None:
                raise error from reply
            raise reply
        out.append(prompts.join_prefill(opening, prompts.answer_text(reply.content)))
    return out


def _skipped(prepared: PreparedExample, reason: str) -> Mined:
    return Mined(prepared.example.id, prepared.example.db_id, "skipped", reason=reason)


# ------------------------------------------------------------------------------------ the file
def mined_paths(output: Path) -> tuple[Path, Path]:
    """(outcomes, report) beside a records file: ``mined.jsonl`` gets ``mined.outcomes.jsonl`` and
    ``mine_report.json``; another name ``NAME.outcomes.jsonl`` and ``NAME.mine_report.json``."""
    report = "mine_report.json" if output.name == "mined.jsonl" else f"{output.stem}.mine_report.json"
    return output.with_name(f"{output.stem}.outcomes.jsonl"), output.with_name(report)


def _done_ids(path: Path) -> set[int]:
    """Example ids in a JSONL file written line by line; a line torn by a crash is cut off."""
    if not path.is_file():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):  # the last line was cut short: drop it, its example is redone
        data = data[: data.rfind(b"\n") + 1]
        path.write_bytes(data)
    ids = set()
    for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                ids.add(int(json.loads(line)["example_id"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{path}:{number} is not a mined line ({exc}); move the file away and mine again.") from exc
    return ids


def _check_identity(report_path: Path, identity: dict[str, Any], output: Path) -> None:
    """Refuse to continue a file that another model or other settings began."""
    if not report_path.is_file():
        raise ConfigError(
            f"{output} exists without {report_path.name} beside it, so what mined it is unknown; "
            "pass another --output or move the file away."
        )
    before = json.loads(report_path.read_text(encoding="utf-8")).get("identity")
    if before != identity:
        changed = sorted(k for k in set(before or {}) | set(identity) if (before or {}).get(k) != identity.get(k))
        raise ConfigError(
            f"{output} was mined with other settings ({', '.join(changed)} differ); resume with the same "
            "--model and config, or pass another --output."
        )


def _write_report(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def mine_to_file(
    miner: Miner,
    examples: Sequence[Example],
    open_db: Callable[[str], Database],
    output: Path,
    *,
    identity: dict[str, Any],
    progress: Callable[[str], None] | None = None,
) -> MineReport:
    """Mine ``examples`` into ``output`` (records, JSONL) and its outcomes file, appending and
    flushing per example; examples already in either file are skipped, so running again resumes.

    ``identity`` (model spec, view and synthesis settings) is kept in the report; a file begun
    under another identity is refused. The report is rewritten after every batch.
    """
    output = Path(output)
    outcomes_path, report_path = mined_paths(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.exists() or outcomes_path.exists():
        _check_identity(report_path, identity, output)
    done = _done_ids(output) | _done_ids(outcomes_path)
    todo = [e for e in examples if e.id not in done]
    report = MineReport(model=str(identity.get("model", "")), already_done=len(examples) - len(todo))
    summary = lambda: {"identity": identity, "records": str(output), "outcomes": str(outcomes_path), **report.to_dict()}
    _write_report(report_path, summary())
    start = time.perf_counter()
    with output.open("a", encoding="utf-8") as records, outcomes_path.open("a", encoding="utf-8") as log:
        for begin in range(0, len(todo), miner.batch_size):
            for mined in miner.chunk(todo[begin : begin + miner.batch_size], open_db):
                if mined.record is not None:  # the record first: an example in either file is done
                    records.write(json.dumps(mined.record.to_dict(), ensure_ascii=False) + "\n")
                    records.flush()
                log.write(json.dumps(mined.log_line(), ensure_ascii=False) + "\n")
                log.flush()
                report.add(mined)
                if progress is not None:
                    progress(f"{report.already_done + report.examples}/{len(examples)} #{mined.example_id} "
                             f"({mined.db_id}): {mined.reason or mined.outcome} {mined.seconds:.1f} s")
            report.seconds = time.perf_counter() - start
            _write_report(report_path, summary())
    report.seconds = time.perf_counter() - start
    _write_report(report_path, summary())
    return report
