"""What each stage shows the model: the ONE composition the graph's nodes and ``finetune`` call.

``stage_messages`` turns (stage, question, database, links, settings) into the chat messages of
that stage; ``stage_prefill`` is the opening of its answer. The graph sends these at inference,
and the training records (``finetune``: synthesis, model sampling, the filtering judge) are built
from the very same calls, so a fine-tuned model sees exactly the text it was trained on; the golden
files (tests/golden/) pin every byte.

Which schema each stage shows: schema linking, the full-schema draft and noise correction (verdict
and repair, rescue's too) get the full schema with ``link_sample_rows`` rows; generation gets the
schema reduced to its links with ``generate_sample_rows`` rows (the full schema when there are
none); continuation writing the full schema under ``cw_full_schema``, else generation's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from route_graph import prompts
from route_graph.rendering import stage_schema_text
from route_graph.results import answer_is_empty
from route_graph.sql.result import ExecutionResult, summarize_result
from route_graph.values import match_values, render_matches
from route_graph.views.config import ViewConfig

if TYPE_CHECKING:
    from route_graph.sql.database import Database

__all__ = [
    "NO_SQL_ERROR",
    "Stage",
    "execution_feedback",
    "full_schema_text",
    "linked_schema_text",
    "no_sql_result",
    "question_values",
    "repair_problem",
    "stage_messages",
    "stage_prefill",
]

#: The model-facing stages: ``draft`` is schema linking's full-schema SQL, ``nc_repair`` noise
#: correction's (and rescue's) repair of SQL that fails or returns nothing.
Stage = Literal["sl", "draft", "generate", "nc", "nc_repair", "cw"]
_TASK: dict[str, prompts.Task] = {
    "sl": "sl", "draft": "ts", "generate": "ts", "nc": "nc", "nc_repair": "nc_repair", "cw": "cw",
}
Links = Mapping[str, Sequence[str]]
#: The execution error of an answer without SQL: noise correction is asked to repair it like a failing query.
NO_SQL_ERROR = "The model's answer contained no SQL query."


def full_schema_text(db: Database, cfg: ViewConfig) -> str:
    """Schema text of the SL, draft, NC and (under ``cw_full_schema``) CW prompts."""
    return stage_schema_text(db, cfg)


def linked_schema_text(db: Database, cfg: ViewConfig, links: Links | None) -> str:
    """Schema text of the generation prompt: reduced to ``links``, the full schema without them."""
    return stage_schema_text(db, cfg, links)


def question_values(db: Database, cfg: ViewConfig, question: str, hint: str | None) -> list[str] | None:
    """The retrieved-value lines a question's prompts show (``value_retrieval``); None when off or none."""
    if not cfg.value_retrieval:
        return None
    matches = match_values(db, question, hint, limit=cfg.value_match_limit, threshold=cfg.value_match_threshold)
    return render_matches(matches) or None


def execution_feedback(result: ExecutionResult, cfg: ViewConfig) -> str:
    """What the model is told about an execution: the error, or a bounded summary of the rows."""
    return summarize_result(result, max_rows=cfg.feedback_rows, value_chars=cfg.feedback_value_chars)


def no_sql_result() -> ExecutionResult:
    """The failed execution that stands for an answer holding no SQL (``NO_SQL_ERROR``)."""
    return ExecutionResult(
        sql="", ok=False, columns=[], rows=[], row_count=0, truncated=False,
        error=NO_SQL_ERROR, error_kind="error", elapsed_s=0.0,
    )


def repair_problem(result: ExecutionResult) -> prompts.RepairProblem | None:
    """What execution says is wrong with a result, before any model is asked: the SQL failed
    (``"error"``), returned no rows (``"empty"``) or only NULLs (``"null"``); None: nothing.
    Noise correction sends such SQL straight to ``nc_repair`` (no verdict: execution gave it)."""
    if not result.ok:
        return "error"
    if not result.rows:
        return "empty"
    return "null" if answer_is_empty(result.rows) else None


def stage_messages(
    stage: Stage,
    question: str,
    db: Database,
    cfg: ViewConfig,
    *,
    links: Links | None = None,
    hint: str | None = None,
    values: prompts.Values = None,
    sql: str = "",
    feedback: str = "",
    problem: prompts.RepairProblem = "error",
    prefix: str | None = None,
    full_text: str | None = None,
) -> list[prompts.Message]:
    """The messages ``stage`` sends for ``question`` on ``db``.

    ``links`` reduce generation's schema (and CW's without ``cw_full_schema``); ``values`` are the
    retrieved-value lines (``question_values``); ``sql`` and ``feedback`` are the candidate and its
    execution feedback (NC); ``problem`` what is wrong with it (NC repair); ``prefix`` the unfinished
    SQL (CW; ``continuation_prefix`` by default). ``full_text`` is the full schema's text when the
    caller has it already (it is the same for every full-schema stage of a database).
    """
    style = {"hint": hint, "dialect": db.dialect, "style": cfg.prompt_style, "values": values}
    full = lambda: full_text if full_text is not None else full_schema_text(db, cfg)
    if stage == "sl":
        return prompts.sl_messages(question, full(), **style)
    if stage == "draft":
        return prompts.ts_messages(question, full(), **style)
    if stage == "generate":
        text = linked_schema_text(db, cfg, links) if links else full()
        return prompts.ts_messages(question, text, **style)
    if stage == "nc":
        return prompts.nc_messages(question, full(), sql, feedback, **style)
    if stage == "nc_repair":
        return prompts.nc_repair_messages(question, full(), sql, feedback, problem=problem, **style)
    if stage == "cw":
        text = full() if cfg.cw_full_schema or not links else linked_schema_text(db, cfg, links)
        return prompts.cw_messages(question, text, cfg.continuation_prefix if prefix is None else prefix, **style)
    raise ValueError(f"Unknown stage {stage!r}; stages are {', '.join(_TASK)}.")


def stage_prefill(stage: Stage, cfg: ViewConfig, prefix: str | None = None) -> str:
    """The opening of ``stage``'s answer, for backends that continue a prefilled reply."""
    return prompts.answer_prefill(_TASK[stage], cfg.continuation_prefix if prefix is None else prefix)
