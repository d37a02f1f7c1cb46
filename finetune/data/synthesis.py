"""MSFT data synthesis: one question/SQL pair -> TS, SL, NC and CW training records.

Every prompt comes from ``route_graph.views.stage_messages``, the very composition the graph's nodes
call, so the fine-tuned model sees at training time exactly what it sees in MCP:

- TS: question (+hint) -> gold SQL (T1/T2 aliases replaced by table names where unambiguous and
  the result is unchanged), on the full schema (the draft of MCP step 1) and on the
  gold-linked schema (MCP step 2; sometimes with one unneeded extra table, as linking gives).
- SL: question on the full schema -> the tables/columns the gold SQL uses (sqlglot) plus the
  foreign-key columns joining linked tables, as the JSON object the graph parses.
- NC: question, candidate SQL and its execution feedback -> "correct", or "incorrect" plus the
  gold. Candidates are the gold itself or a rule-based corruption verified by execution to give
  a different result; labels are balanced to ``nc_incorrect_ratio``.
- CW: the gold cut before a clause (or the bare inference prefix "SELECT ") -> the whole gold.

Each example draws from its own seeded RNG (seed, example id); only the NC label depends on the
examples before it (a running balance), so output is deterministic for a seed and an order.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from finetune.config import SynthConfig
from finetune.data.corruption import corrupt_sql, render_sql
from finetune.data.records import Record
from finetune.data.sqltext import (
    clause_boundaries,
    cut_prefix,
    normalize_sql,
    qualify_with_table_names,
)
from route_graph import prompts
from route_graph.evaluation.datasets import Example
from route_graph.evaluation.metrics import gold_order_matters, results_match
from route_graph.linking import links_from_sql, merge_links, with_join_keys
from route_graph.rendering import recall_first_links
from route_graph.repair import single_quoted_literals
from route_graph.sql.database import Database
from route_graph.sql.execute import execute_sql
from route_graph.sql.result import ExecutionResult
from route_graph.sql.schema import Schema, Table
from route_graph.views import (
    Stage,
    ViewConfig,
    execution_feedback,
    full_schema_text,
    question_values,
    stage_messages,
)

__all__ = ["ExampleRecords", "PreparedExample", "SynthReport", "Synthesizer", "gold_sql_of"]


def gold_sql_of(example: Example, cfg: SynthConfig) -> str:
    """The gold SQL as targets show it (whitespace-normalised unless switched off)."""
    return normalize_sql(example.gold_sql) if cfg.normalize_whitespace else example.gold_sql.strip().rstrip(";")


@dataclass
class PreparedExample:
    """One example ready for prompts (``Synthesizer.prepare``): the target gold, its rows, the gold
    links (SL's target), the linked view generation shows, and the hint/values/full schema every
    prompt of the example shares."""

    example: Example
    db: Database
    view: ViewConfig
    gold: str  # as targets show it (normalised, aliases qualified where that is safe)
    rng: random.Random  # the example's own: the extra table, then corruptions and CW cuts
    gold_result: ExecutionResult | None = None
    restyled: bool = False
    requoted: bool = False
    links: dict[str, list[str]] = field(default_factory=dict)
    view_links: dict[str, list[str]] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The gold SQL executed (else there is nothing to learn from the example)."""
        return self.gold_result is not None and self.gold_result.ok

    def messages(self, stage: Stage, **more: Any) -> list[prompts.Message]:
        """``stage``'s messages for this example, as the graph composes them."""
        return stage_messages(stage, self.example.question, self.db, self.view, **self.context, **more)

    def generate_messages(self) -> list[prompts.Message]:
        """MCP step 2's prompt on the linked view (the TS ``linked_schema`` record's prompt)."""
        return self.messages("generate", links=self.view_links)

    def record(self, task: str, variant: str, prompt: list[prompts.Message], answer: str) -> Record:
        """A record of this example."""
        return Record.of(task, self.example.db_id, self.example.id, variant, prompt, answer)


@dataclass
class ExampleRecords:
    """What one example produced, and why a task was skipped for it (if it was)."""

    example_id: int
    records: list[Record] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # task -> reason
    restyled: bool = False  # target SQL rewritten from T1/T2 aliases to table names
    requoted: bool = False  # target SQL's double-quoted string literals single-quoted


@dataclass
class SynthReport:
    """Per-task counts, NC label balance, corruption kinds used, skips with reasons, speed."""

    examples: int = 0
    records: int = 0
    by_task: Counter = field(default_factory=Counter)
    by_variant: Counter = field(default_factory=Counter)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    restyled: int = 0
    requoted: int = 0
    seconds: float = 0.0

    def add(self, outcome: ExampleRecords, db_id: str) -> None:
        self.examples += 1
        self.restyled += int(outcome.restyled)
        self.requoted += int(outcome.requoted)
        self.records += len(outcome.records)
        for record in outcome.records:
            self.by_task[record.task] += 1
            self.by_variant[f"{record.task}/{record.variant}"] += 1
        for task, reason in outcome.skipped.items():
            self.skipped.append({"example_id": outcome.example_id, "db_id": db_id, "task": task, "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        reasons = Counter(f"{s['task']}: {s['reason'].split(':')[0]}" for s in self.skipped)
        return {
            "examples": self.examples,
            "records": self.records,
            "by_task": dict(sorted(self.by_task.items())),
            "by_variant": dict(sorted(self.by_variant.items())),
            "skip_reasons": dict(sorted(reasons.items())),
            "targets_qualified_with_table_names": self.restyled,
            "targets_single_quoted": self.requoted,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 2),
            "examples_per_second": round(self.examples / self.seconds, 2) if self.seconds else None,
        }


class Synthesizer:
    """Builds the records of examples (schema texts cached per database).

    Stateful on purpose: NC labels follow a running balance towards ``nc_incorrect_ratio`` over
    the examples it has seen, so output is deterministic for a given seed and example order.
    """

    def __init__(self, view: ViewConfig, cfg: SynthConfig, *, seed: int = 0) -> None:
        """``view`` decides what the records show (a ``RouteConfig`` gives its ``view()``'s fields)."""
        self.view = ViewConfig.of(view)
        self.cfg = cfg
        self.seed = seed
        self.timeout_s = cfg.timeout_s or self.view.execution_timeout_s
        self._full_text: dict[int, str] = {}
        self._nc_seen = 0
        self._nc_incorrect = 0

    # ----------------------------------------------------------------------------- public
    def run(
        self, examples: Iterable[Example], open_db: Callable[[str], Database], report: SynthReport | None = None
    ) -> Iterator[Record]:
        """Records of every example, in example order; ``report`` (if given) is filled as it goes."""
        report = report if report is not None else SynthReport()
        start = time.perf_counter()
        for example in examples:
            outcome = self.example(example, open_db(example.db_id))
            report.add(outcome, example.db_id)
            report.seconds = time.perf_counter() - start
            yield from outcome.records

    def prepare(self, example: Example, db: Database) -> PreparedExample:
        """The gold target, its rows, its links and the prompt context of one example: what every
        record is built from (``finetune.data.mining`` asks the model the same generate prompt).

        ``rng`` draws the linked view's extra table first; records drawn after it use it on.
        Nothing else is filled in when the gold SQL fails (``ok`` is False).
        """
        prepared = PreparedExample(example, db, self.view, gold_sql_of(example, self.cfg), random.Random(f"{self.seed}:{example.id}"))
        prepared.gold_result = self.execute(db, prepared.gold)
        if not prepared.ok:
            return prepared
        if self.cfg.qualify_style == "table_names":
            prepared.gold, prepared.restyled = self._restyle(db, prepared, qualify_with_table_names(prepared.gold, db.dialect))
        if self.cfg.string_quotes == "single":
            prepared.gold, prepared.requoted = self._restyle(db, prepared, single_quoted_literals(prepared.gold, db.schema, db.dialect))
        links = links_from_sql(prepared.gold, db.schema, db.dialect) or {}
        if self.cfg.sl_join_keys:  # what the tuned linker should answer, and so the linked view it gets
            links = with_join_keys(db.schema, links)
        if self.cfg.sl_all_columns:  # every column of a linked table: the tuned linker over-recalls
            links = {t: [c.name for c in db.schema.table(t).columns] for t in links}
        view_links = self._view_links(links, db, prepared.rng) if links else {}
        # Generation at inference sees recall-first links (rendering.recall_first_links): so does training.
        view_links, _ = recall_first_links(db, self.view, view_links, f"{example.question} {example.hint or ''}")
        prepared.links, prepared.view_links = links, view_links
        prepared.context = {
            "hint": example.hint, "values": question_values(db, self.view, example.question, example.hint),
            "full_text": self._full_schema(db),
        }
        return prepared

    def example(self, example: Example, db: Database) -> ExampleRecords:
        """All records of one example (the NC label follows the running balance)."""
        out = ExampleRecords(example.id)
        prepared = self.prepare(example, db)
        if not prepared.ok:
            out.skipped["all"] = f"gold fails: {prepared.gold_result.error}"
            return out
        out.restyled, out.requoted = prepared.restyled, prepared.requoted
        gold, links, view_links = prepared.gold, prepared.links, prepared.view_links
        tasks = set(self.cfg.tasks)
        messages, make = prepared.messages, prepared.record

        if "ts" in tasks:
            target = prompts.ts_completion(gold)
            if self.cfg.ts_full_schema:
                out.records.append(make("ts", "full_schema", messages("draft"), target))
            if self.cfg.ts_reduced_schema:
                if view_links:
                    out.records.append(make("ts", "linked_schema", prepared.generate_messages(), target))
                else:
                    out.skipped["ts"] = "no links: gold SQL uses no schema column sqlglot can resolve"
        if "sl" in tasks:
            if links:
                out.records.append(make("sl", "gold_links", messages("sl"), prompts.sl_completion(links)))
            else:
                out.skipped["sl"] = "no links: sqlglot cannot parse the gold SQL or resolve its columns"
        if "nc" in tasks:
            out.records.append(self._nc_record(prepared))
        if "cw" in tasks:
            prefix, variant = self._cw_prefix(gold, db.dialect, prepared.rng)
            if prefix is None:
                out.skipped["cw"] = variant
            else:
                # The schema the graph's CW prompt shows: full with ``cw_full_schema``, else reduced.
                target_sql = prefix + gold[len(prefix):] if gold.lower().startswith(prefix.lower()) else gold
                prompt = messages("cw", links=view_links or None, prefix=prefix)
                out.records.append(make("cw", variant, prompt, prompts.cw_completion(target_sql)))
        return out

    # ---------------------------------------------------------------------------- helpers
    def execute(self, db: Database, sql: str) -> ExecutionResult:
        """``sql`` through the read-only guarded executor, under the synthesis limits."""
        return execute_sql(db, sql, timeout_s=self.timeout_s, max_rows=self.view.max_rows)

    def _restyle(self, db: Database, prepared: PreparedExample, rewritten: str | None) -> tuple[str, bool]:
        """The rewritten gold (table names for aliases, single-quoted literals) when it executes to
        the very same rows; else the gold as it was."""
        gold = prepared.gold
        if not rewritten or rewritten == gold:
            return gold, False
        tried = self.execute(db, rewritten)
        if tried.ok and results_match(prepared.gold_result.rows, tried.rows, order_matters=True):
            return normalize_sql(rewritten), True
        return gold, False

    def feedback(self, result: ExecutionResult) -> str:
        """The execution feedback the NC prompts show."""
        return execution_feedback(result, self.view)

    def _full_schema(self, db: Database) -> str:
        key = id(db)
        if key not in self._full_text:
            self._full_text[key] = full_schema_text(db, self.view)
        return self._full_text[key]

    def _view_links(self, links: dict[str, list[str]], db: Database, rng: random.Random) -> dict[str, list[str]]:
        """Gold links, sometimes plus unneeded tables (inference links over-recall)."""
        others = [t for t in db.schema.tables if t.name not in links]
        if not others:
            return links
        counts = self.cfg.extra_table_counts
        if counts is None:  # one extra table with extra_table_prob (the draws older data was made with)
            if rng.random() >= self.cfg.extra_table_prob:
                return links
            extras = [rng.choice(others)]
        else:
            extras = _joinable_first(_draw_count(counts, rng, len(others)), db.schema, others, links, rng)
        if not extras:
            return links
        added: dict[str, list[str]] = {}
        for extra in extras:
            columns = [c.name for c in extra.columns]
            added[extra.name] = rng.sample(columns, k=min(len(columns), rng.randint(1, 2)))
        return merge_links(db.schema, links, added)

    def _want_incorrect(self) -> bool:
        return self._nc_incorrect < self.cfg.nc_incorrect_ratio * (self._nc_seen + 1)

    def _nc_record(self, prepared: PreparedExample) -> Record:
        """An NC record: a verified corruption when the balance wants an incorrect one and one
        exists, else the gold. Candidates are printed by sqlglot in both classes, so the SQL's
        style never gives the label away."""
        db, gold, gold_result = prepared.db, prepared.gold, prepared.gold_result
        candidate, variant, result = None, "correct", None
        if self._want_incorrect():
            ordered = gold_order_matters(gold, db.dialect)
            kinds = tuple(self.cfg.nc_corruptions) if self.cfg.nc_corruptions else None
            for corruption in corrupt_sql(gold, db.schema, db.dialect, rng=prepared.rng, kinds=kinds)[: self.cfg.nc_max_tries]:
                tried = self.execute(db, corruption.sql)
                if tried.ok and not results_match(gold_result.rows, tried.rows, order_matters=ordered):
                    candidate, variant, result = corruption.sql, f"corruption:{corruption.kind}", tried
                    break
        if candidate is None:
            printed = render_sql(gold, db.dialect)
            candidate, result = gold, gold_result
            if printed and printed != gold:
                tried = self.execute(db, printed)
                if tried.ok and results_match(gold_result.rows, tried.rows, order_matters=True):
                    candidate, result = printed, tried
        correct = variant == "correct"
        self._nc_seen += 1
        self._nc_incorrect += 0 if correct else 1
        prompt = prepared.messages("nc", sql=candidate, feedback=self.feedback(result))
        return prepared.record("nc", variant, prompt, prompts.nc_completion(correct, None if correct else gold))

    def _cw_prefix(self, gold: str, dialect: str, rng: random.Random) -> tuple[str | None, str]:
        """(prefix, variant): the inference prefix or a cut before a random clause of the gold."""
        bare = self.view.continuation_prefix
        starts_bare = gold.lower().startswith(bare.strip().lower() + " ") or gold.lower() == bare.strip().lower()
        cuts = clause_boundaries(gold, dialect)
        if starts_bare and (not cuts or rng.random() < self.cfg.cw_bare_prefix_ratio):
            return bare, "bare_prefix"
        if cuts:
            return cut_prefix(gold, rng.choice(cuts)), "clause_prefix"
        return None, f"no prefix: the gold neither starts with {bare.strip()!r} nor has a clause boundary"


def _draw_count(probabilities: list[float], rng: random.Random, available: int) -> int:
    """How many extra tables: index drawn with ``probabilities`` (normalized), at most ``available``."""
    total = sum(probabilities)
    point, cumulative = rng.random() * total, 0.0
    for count, weight in enumerate(probabilities):
        cumulative += weight
        if point < cumulative:
            return min(count, available)
    return min(len(probabilities) - 1, available)


def _joinable_first(count: int, schema: Schema, others: list[Table], links: dict[str, list[str]], rng: random.Random) -> list[Table]:
    """``count`` distinct unlinked tables, those a foreign key joins to a linked table first.

    Measured: 54% of the 0.5B linker's unneeded tables join a gold table by a foreign key
    (benchmarks/runs/ablation-400-base-prefill), and a joinable table is what tempts a needless join."""
    if count <= 0:
        return []
    linked = {name.lower() for name in links}
    targets = {fk.ref_table.lower() for name in links if (table := schema.table(name)) for fk in table.foreign_keys}
    joinable = [t for t in others if t.name.lower() in targets or any(fk.ref_table.lower() in linked for fk in t.foreign_keys)]
    rest = [t for t in others if t not in joinable]
    rng.shuffle(joinable)
    rng.shuffle(rest)
    return (joinable + rest)[:count]
