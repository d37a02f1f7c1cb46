"""The MCP stages as LangGraph nodes: schema_link, generate, noise_correct, continue_write, finalize;
around them the conversation nodes (new_question, rewrite_question, respond) and the human review.

Each node asks the model through the shared prompt module, executes every SQL it gets through
the guarded executor, and appends one trace entry (what it proposed, whether it executed, whether
it was taken, and its cost in model calls, tokens and seconds). Model output never raises here:
unparseable answers and failing SQL become trace entries and execution feedback.

Where execution already tells what is wrong, the stages act on it instead of asking the model's
opinion: generate re-qualifies a column with the wrong alias (``requalify_columns``); noise
correction asks for a repair, not a verdict, when the SQL fails or returns nothing (``nc_repair``);
finalize votes among the candidates by their results (``vote``). When nothing executes after all
of that, ``rescue`` joins the table that owns a missing column or takes the closest existing name,
then samples repairs (``rescue``).

Self-consistency (``self_consistency`` = K > 0) adds K sampled answers to generate's prompt, fanned
out with LangGraph ``Send`` to ``sample_generate`` and gathered by ``self_consistency``; they are
further candidates of the finalize vote. Off (the default), the graph never visits those nodes.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import asdict
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import get_executor_for_config, merge_configs
from langgraph.constants import TAG_NOSTREAM
from langgraph.runtime import Runtime
from langgraph.types import Overwrite, Send, interrupt

try:  # where LangGraph keeps the run's checkpointer in a node's config
    from langgraph._internal._constants import CONFIG_KEY_CHECKPOINTER
except ImportError:  # pragma: no cover - moved in another LangGraph version
    CONFIG_KEY_CHECKPOINTER = "__pregel_checkpointer"

from route_graph import chat, prompts
from route_graph.context import RouteConfig
from route_graph.errors import ConfigError, InputError, RouteGraphError
from route_graph.linking import (
    is_hard,
    links_from_sql,
    links_json_schema,
    merge_links,
    validate_links,
)
from route_graph.model_capabilities import (
    bind_json_schema,
    continuing_model,
    model_capabilities,
    model_failure_error,
    rejects_request_feature,
)
from route_graph.rendering import recall_first_links
from route_graph.repair import RESCUE_RULES, requalify_column
from route_graph.results import answer_is_empty, vote_by_result
from route_graph.sql.database import Database
from route_graph.sql.execute import execute_sql
from route_graph.sql.result import ExecutionResult
from route_graph.state import RouteState, SampleTask
from route_graph.values import match_values, render_matches
from route_graph.views import (
    Stage,
    execution_feedback,
    full_schema_text,
    stage_messages,
    stage_prefill,
)

__all__ = [
    "MAX_REQUALIFY_STEPS",
    "MODEL_CALL_NAMES",
    "NO_SQL_ERROR",
    "REJECTED_ERROR",
    "RUN_TAG",
    "SAMPLE_STAGE",
    "USER_FACING_CALLS",
    "VOTE_CANDIDATES",
    "RouteNodes",
]

NO_SQL_ERROR = "The model's answer contained no SQL query."
REJECTED_ERROR = "The reviewer rejected the SQL; no answer is returned."
#: A query can misqualify several columns; SQLite names one per error, so one per step.
MAX_REQUALIFY_STEPS = 3
#: Candidates of the finalize vote, in pipeline order (``sql_by_stage`` key, trace stage name).
VOTE_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("draft", "schema_link"),
    ("generate", "generate"),
    ("noise_correct", "noise_correct"),
    ("continue_write", "continue_write"),
    ("rescue", "rescue"),
)
#: Stages whose SQL is a candidate only when the stage took it.
ACCEPTING_STAGES = frozenset({"noise_correct", "continue_write", "rescue"})
#: The trace stage of the self-consistency samples (and the answer's ``stage`` when one wins the vote).
SAMPLE_STAGE = "self_consistency"
#: Model calls whose tokens are the user's reply (streamed by ``stream_mode="messages"``); the
#: others carry LangGraph's ``nostream`` tag unless ``RouteConfig.stream_internal_calls``.
USER_FACING_CALLS: frozenset[str] = frozenset({"respond.answer"})
#: The LangChain run name of each model call (``stage.purpose``): a LangSmith trace tells apart the
#: two concurrent schema-linking calls, NC's verdict from its repair, and so on.
MODEL_CALL_NAMES: frozenset[str] = frozenset(
    {
        "schema_link.links",
        "schema_link.draft",
        "generate",
        "sample_generate",
        "noise_correct.verdict",
        "noise_correct.repair",
        "continue_write",
        "rescue.repair",
        "rewrite_question",
        "respond.answer",
    }
)
#: Tag on every model call the graph makes; each call is tagged with its stage (node) name too.
RUN_TAG = "route_graph"


class _Meter:
    """Counts model calls, tokens and wall time of one node."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self._lock = threading.Lock()  # schema_link records its two concurrent calls
        self.calls = 0
        self.input_tokens = 0
        self.output_tokens = 0

    def record(self, message: BaseMessage) -> str:
        usage = getattr(message, "usage_metadata", None) or {}
        with self._lock:
            self.calls += 1
            self.input_tokens += int(usage.get("input_tokens", 0) or 0)
            self.output_tokens += int(usage.get("output_tokens", 0) or 0)
        return prompts.answer_text(getattr(message, "content", None))  # None content: empty answer

    def cost(self) -> dict[str, Any]:
        return {
            "llm_calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "seconds": round(time.perf_counter() - self.start, 3),
        }


class RouteNodes:
    """Node and router functions bound to one chat model, one database and default settings."""

    def __init__(self, llm: BaseChatModel, db: Database, config: RouteConfig) -> None:
        self.llm = llm
        self.db = db
        self.default = config
        self._sl_llm: Runnable = self._structured_linker(llm)
        self._continuing: Runnable | None = continuing_model(llm)
        self._prefill_trailing_space = model_capabilities(llm).prefill != "assistant_turn"
        self._degrade_lock = threading.Lock()

    def _structured_linker(self, llm: BaseChatModel) -> Runnable:
        """SL through JSON-schema constrained decoding where the backend supports it."""
        return bind_json_schema(llm, "schema_links", links_json_schema(self.db.schema))

    def _ask(
        self,
        meter: _Meter,
        messages: list[prompts.Message],
        prefill: str,
        cfg: RouteConfig,
        config: RunnableConfig,
        llm: Runnable | None = None,
        *,
        name: str,
        temperature: float | None = None,
    ) -> str:
        """One model call; the answer is prefilled where the backend can continue it.

        The call runs under the node's config (callbacks, tags, metadata kept) with its own run
        name (one of ``MODEL_CALL_NAMES``) and tags ``route_graph`` + its stage, so traces can
        tell the stages' calls apart. ``temperature`` (self-consistency samples only) goes to the
        model as a call argument, which LangChain passes on to the backend: the in-process
        engines and OpenAI-compatible servers read it; without it the model's own setting holds.
        """
        tags = [RUN_TAG, name.split(".", 1)[0]]
        if name not in USER_FACING_CALLS and not cfg.stream_internal_calls:
            tags.append(TAG_NOSTREAM)  # stream_mode="messages" streams the reply, not links and drafts
        config = merge_configs(config, {"run_name": name, "tags": tags})
        options: dict[str, Any] = {} if temperature is None else {"temperature": temperature}
        continuing = self._continuing if llm is None and prefill and cfg.answer_prefill else None
        if llm is not None and llm is self._sl_llm and not cfg.constrained_json:
            llm = None
        try:
            if continuing is not None:
                if not self._prefill_trailing_space:  # Anthropic refuses a prefilled turn ending in whitespace
                    prefill = prefill.rstrip()
                reply = continuing.invoke([*messages, {"role": "assistant", "content": prefill}], config, **options)
                return prompts.join_prefill(prefill, meter.record(reply))
            return meter.record((llm or self.llm).invoke(messages, config, **options))
        except RouteGraphError:
            raise
        except Exception as exc:
            feature = "answer prefill" if continuing is not None else "JSON-schema output" if llm is self._sl_llm else None
            if feature is not None and rejects_request_feature(exc):
                self._degrade(feature, exc)  # the provider refused the field: once, then plain prompts
                return self._ask(meter, messages, prefill, cfg, config, None, name=name, temperature=temperature)
            error = model_failure_error(exc)
            if error is None:
                raise
            raise error from exc  # the user's to fix: say how

    def _degrade(self, feature: str, exc: BaseException) -> None:
        """Stop using ``feature`` with this model after its provider rejected it; warn once."""
        with self._degrade_lock:
            if feature == "answer prefill":
                if self._continuing is None:
                    return
                self._continuing = None
            else:
                if self._sl_llm is self.llm:
                    return
                self._sl_llm = self.llm
        warnings.warn(
            f"The model's provider rejected route-graph's {feature} ({type(exc).__name__}: {str(exc)[:200]}); "
            f"continuing without it. Set RouteConfig({'answer_prefill' if feature == 'answer prefill' else 'constrained_json'}=False) "
            "to skip the failed first try.",
            RuntimeWarning,
            stacklevel=2,
        )

    # ---------------------------------------------------------------- helpers
    def settings(self, runtime: Runtime[RouteConfig] | None) -> RouteConfig:
        """The build-time config with the fields this run's context names (see ``RouteConfig.override``)."""
        return self.default.override(runtime.context if runtime is not None else None)

    def _execute(self, sql: str | None, cfg: RouteConfig) -> ExecutionResult:
        if not sql:
            return ExecutionResult(
                sql="", ok=False, columns=[], rows=[], row_count=0, truncated=False,
                error=NO_SQL_ERROR, error_kind="error", elapsed_s=0.0,
            )
        return execute_sql(self.db, sql, timeout_s=cfg.execution_timeout_s, max_rows=cfg.max_rows)

    def _messages(
        self,
        stage: Stage,
        state: Mapping[str, Any],
        cfg: RouteConfig,
        matches: list[dict[str, Any]] | None = None,
        **view: Any,
    ) -> list[prompts.Message]:
        """``views.stage_messages`` for this question: its hint, and the value matches it looked up."""
        matches = state.get("value_matches") if matches is None else matches
        values = render_matches(matches) if cfg.value_retrieval and matches else None
        return stage_messages(stage, state["question"], self.db, cfg.view(), hint=state.get("hint"), values=values, **view)

    def _retrieve_values(self, state: RouteState, cfg: RouteConfig) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
        """This question's value matches (``value_retrieval``) and the trace fields of the node that
        looked them up: computed once per question, by the first SQL-writing node. Never raises: a
        failing index build gives no matches and a ``value_error``."""
        known = state.get("value_matches")
        if not cfg.value_retrieval or known is not None:
            return known, {}
        start = time.perf_counter()
        trace: dict[str, Any] = {}
        try:
            found = match_values(
                self.db, state["question"], state.get("hint"),
                limit=cfg.value_match_limit, threshold=cfg.value_match_threshold,
            )
            matches = [m.to_dict() for m in found]
        except Exception as exc:  # noqa: BLE001 - value retrieval is an aid; the question goes on without it
            matches = []
            trace["value_error"] = f"{type(exc).__name__}: {exc}"
        trace["value_matches"] = matches
        trace["value_seconds"] = round(time.perf_counter() - start, 3)
        return matches, trace

    @staticmethod
    def _outcome(result: ExecutionResult) -> dict[str, Any]:
        return {"executed": result.ok, "rows": result.row_count if result.ok else None, "error": result.error}

    # ---------------------------------------------------------------- nodes
    def schema_link(
        self, state: RouteState, runtime: Runtime[RouteConfig], config: RunnableConfig
    ) -> dict[str, Any]:
        """MCP step 1: links from the SL answer and from a full-schema draft SQL, merged."""
        cfg = self.settings(runtime)
        meter = _Meter()
        view = cfg.view()
        schema_text = full_schema_text(self.db, view)
        matches, value_trace = self._retrieve_values(state, cfg)
        sl_msgs = self._messages("sl", state, cfg, matches, full_text=schema_text)
        ts_msgs = self._messages("draft", state, cfg, matches, full_text=schema_text)
        # Constrained (JSON-schema) decoding replaces the prefill where the backend has it.
        sl_llm = None if self._sl_llm is self.llm else self._sl_llm
        with get_executor_for_config(config) as pool:  # both calls at once: batched by local models
            sl_future: Future = pool.submit(
                self._ask, meter, sl_msgs, stage_prefill("sl", view), cfg, config, sl_llm, name="schema_link.links"
            )
            ts_future: Future = pool.submit(
                self._ask, meter, ts_msgs, stage_prefill("draft", view), cfg, config, name="schema_link.draft"
            )
            ts_text = ts_future.result()
            try:
                sl_text = sl_future.result()
            except RouteGraphError:
                raise  # the backend itself failed (ModelError): the user's to fix
            except Exception as exc:  # noqa: BLE001 - an unreadable SL answer must not end the run
                # e.g. JSON-schema decoding cut at the length limit (openai.LengthFinishReasonError):
                # link from the draft SQL alone, and say so in the trace.
                sl_text, added_error = "", {"links_error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            else:
                added_error = {}
        model_links, dropped = validate_links(prompts.parse_links(sl_text), self.db.schema)
        draft_sql = prompts.parse_sql(ts_text)
        draft_links = links_from_sql(draft_sql, self.db.schema, self.db.dialect) if draft_sql else None
        links = merge_links(self.db.schema, model_links, draft_links)
        added: dict[str, Any] = {}
        text = f"{state['question']} {state.get('hint') or ''}"
        links, additions = recall_first_links(self.db, view, links, text, schema_text)
        if additions is not None:
            added = {"recall_added": asdict(additions)}
        draft = self._execute(draft_sql, cfg)
        entry = {
            "stage": "schema_link",
            **value_trace,
            "model_links": model_links,
            "hallucinated": dropped,
            "sql_links": draft_links or {},
            **added_error,
            **added,
            "links": links,
            "fallback_full_schema": not links,
            "proposed_sql": draft_sql,
            **self._outcome(draft),
            **meter.cost(),
        }
        return {
            "links": links,
            "draft_sql": draft_sql,
            "draft_result": draft.to_dict(),
            "sql_by_stage": {"draft": draft_sql or ""},
            "value_matches": matches,
            "trace": [entry],
        }

    def generate(
        self, state: RouteState, runtime: Runtime[RouteConfig], config: RunnableConfig
    ) -> dict[str, Any]:
        """MCP step 2: text-to-SQL on the reduced schema (full schema when linking is off)."""
        cfg = self.settings(runtime)
        meter = _Meter()
        matches, value_trace = self._retrieve_values(state, cfg)
        msgs, links = self._generate_prompt(state, cfg, matches)
        sql = prompts.parse_sql(self._ask(meter, msgs, stage_prefill("generate", cfg.view()), cfg, config, name="generate"))
        result = self._execute(sql, cfg)
        entry: dict[str, Any] = {
            "stage": "generate",
            **value_trace,
            "schema_tables": list(links) if links else "full",
            "proposed_sql": sql,
            "accepted": True,
            **self._outcome(result),
        }
        if cfg.requalify_columns and sql and not result.ok:
            repaired = self._requalify(sql, result, cfg)
            if repaired is not None:
                fixed_sql, fixed = repaired
                entry["requalified"] = {"sql": fixed_sql, "accepted": fixed.ok, **self._outcome(fixed)}
                if fixed.ok:
                    sql, result = fixed_sql, fixed
        entry.update(meter.cost())
        return {
            "sql": sql or "",
            "result": result.to_dict(),
            "stage": "generate",
            "sql_by_stage": {"generate": sql or ""},
            "value_matches": matches,
            "trace": [entry],
        }

    def _generate_prompt(
        self, state: Mapping[str, Any], cfg: RouteConfig, matches: list[dict[str, Any]] | None
    ) -> tuple[list[prompts.Message], dict[str, list[str]] | None]:
        """Generate's TS prompt on the reduced schema (full without linking) and the links it used;
        the self-consistency samples are drawn from this same prompt."""
        links = state.get("links") if cfg.schema_linking else None
        return self._messages("generate", state, cfg, matches, links=links), links

    def sample_generate(
        self, task: SampleTask, runtime: Runtime[RouteConfig], config: RunnableConfig
    ) -> dict[str, Any]:
        """One self-consistency sample: generate's prompt, sampled at ``sample_temperature``, executed.

        ``route_generate`` sends K of these at once (LangGraph ``Send``), so the K calls are
        concurrent: the transformers engine answers them in one padded batch, llama.cpp serves
        them one by one from its cached prompt prefix, a vLLM server batches them and shares the
        prompt through its prefix cache. A failing call or SQL is recorded, never raised: the
        greedy answer already exists and the run goes on without this sample.
        """
        cfg = self.settings(runtime)
        meter = _Meter()
        sample: dict[str, Any] = {"name": f"sample{task['index']}", "index": task["index"], "sql": None}
        try:
            msgs, _ = self._generate_prompt(task, cfg, task.get("value_matches"))
            answer = self._ask(
                meter, msgs, stage_prefill("generate", cfg.view()), cfg, config,
                name="sample_generate", temperature=cfg.sample_temperature,
            )
        except Exception as exc:  # noqa: BLE001 - one lost sample must not end the run
            sample.update(executed=False, rows=None, error=None, model_error=f"{type(exc).__name__}: {str(exc)[:300]}")
            return {"samples": [{**sample, **meter.cost()}]}
        sql = prompts.parse_sql(answer)
        result = self._execute(sql, cfg)
        if cfg.requalify_columns and sql and not result.ok:
            repaired = self._requalify(sql, result, cfg)
            if repaired is not None and repaired[1].ok:
                sql, result = repaired
                sample["requalified"] = True
        sample.update(sql=sql, result=result.to_dict(), **self._outcome(result), **meter.cost())
        return {"samples": [sample]}

    def self_consistency(self, state: RouteState, runtime: Runtime[RouteConfig]) -> dict[str, Any]:
        """Join of the K ``sample_generate`` runs: one trace entry for the whole sampling stage.

        The samples stay in ``samples`` for finalize's vote; the entry says how many there were,
        how many executed, how many different results they reached, and their cost (model calls
        and tokens summed; seconds of the slowest, since they ran at the same time).
        """
        cfg = self.settings(runtime)
        samples = sorted(state.get("samples") or [], key=lambda s: s["index"])
        ran = [s for s in samples if s.get("executed")]
        distinct = len(vote_by_result([(s["name"], s["result"]["rows"]) for s in ran]).groups) if ran else 0
        shown = ("name", "sql", "executed", "rows", "error", "model_error", "requalified")
        entry: dict[str, Any] = {
            "stage": SAMPLE_STAGE,
            "samples": len(samples),
            "temperature": cfg.sample_temperature,
            "executed_samples": len(ran),
            "distinct_results": distinct,
            "failed_calls": sum(1 for s in samples if s.get("model_error")),
            "proposals": [{k: s[k] for k in shown if k in s} for s in samples],
        }
        for key in ("llm_calls", "input_tokens", "output_tokens"):
            entry[key] = sum(int(s.get(key, 0)) for s in samples)
        entry["seconds"] = max((float(s.get("seconds", 0.0)) for s in samples), default=0.0)
        return {"trace": [entry]}

    def _requalify(self, sql: str, result: ExecutionResult, cfg: RouteConfig) -> tuple[str, ExecutionResult] | None:
        """Re-qualify wrongly aliased columns, one error at a time; the last attempt (or None if
        the error was not one ``repair.requalify_column`` can fix)."""
        current, current_result = sql, result
        for _ in range(MAX_REQUALIFY_STEPS):
            fixed = requalify_column(current, current_result.error, self.db.schema, self.db.dialect)
            if fixed is None:
                break
            current, current_result = fixed, self._execute(fixed, cfg)
            if current_result.ok:
                break
        return None if current == sql else (current, current_result)

    @staticmethod
    def _problem(result: ExecutionResult) -> Literal["error", "empty", "null"] | None:
        """What execution says is wrong with a result, before any model is asked (None: nothing)."""
        if not result.ok:
            return "error"
        if not result.rows:
            return "empty"
        return "null" if answer_is_empty(result.rows) else None

    def noise_correct(
        self, state: RouteState, runtime: Runtime[RouteConfig], config: RunnableConfig
    ) -> dict[str, Any]:
        """MCP step 3: SQL that fails or returns nothing is repaired (``nc_repair``); SQL that returns
        rows is judged with its execution feedback. An executable fix wins."""
        cfg = self.settings(runtime)
        meter = _Meter()
        current = ExecutionResult.from_dict(state["result"])
        view = cfg.view()
        feedback = execution_feedback(current, view)
        schema_text = full_schema_text(self.db, view)
        problem = self._problem(current)
        if cfg.nc_repair and problem is not None:
            return self._repair(state, cfg, config, meter, schema_text, feedback, problem)
        if not cfg.nc_verdict:
            entry = {"stage": "noise_correct", "mode": "skipped", "reason": "the SQL returns rows; nc_verdict is off",
                     **meter.cost()}
            return {"sql_by_stage": {"noise_correct": state.get("sql") or ""}, "trace": [entry]}
        msgs = self._messages("nc", state, cfg, sql=state.get("sql") or "", feedback=feedback, full_text=schema_text)
        answer = self._ask(meter, msgs, stage_prefill("nc", view), cfg, config, name="noise_correct.verdict")
        verdict = prompts.parse_verdict(answer, state.get("sql"))
        update: dict[str, Any] = {}
        entry: dict[str, Any] = {
            "stage": "noise_correct",
            "mode": "verdict",
            "verdict": {True: "correct", False: "incorrect", None: "unclear"}[verdict.correct],
            "proposed_sql": verdict.sql,
            "accepted": False,
        }
        if verdict.correct is False and verdict.sql:
            fixed = self._execute(verdict.sql, cfg)
            entry.update(self._outcome(fixed))
            if fixed.ok:
                entry["accepted"] = True
                update = {"sql": verdict.sql, "result": fixed.to_dict(), "stage": "noise_correct"}
        entry.update(meter.cost())
        final_sql = update.get("sql", state.get("sql") or "")
        return {**update, "sql_by_stage": {"noise_correct": final_sql}, "trace": [entry]}

    def _repair(
        self,
        state: RouteState,
        cfg: RouteConfig,
        config: RunnableConfig,
        meter: _Meter,
        schema_text: str,
        feedback: str,
        problem: Literal["error", "empty", "null"],
    ) -> dict[str, Any]:
        """NC on SQL that fails, returns no rows or only NULLs: no verdict is asked (execution gave
        it); the repaired SQL is taken if it executes, and for an empty or NULL result only if it
        returns rows that are not all NULL."""
        msgs = self._messages(
            "nc_repair", state, cfg, sql=state.get("sql") or "", feedback=feedback, problem=problem, full_text=schema_text
        )
        sql = prompts.parse_sql(
            self._ask(meter, msgs, stage_prefill("nc_repair", cfg.view()), cfg, config, name="noise_correct.repair")
        )
        entry: dict[str, Any] = {
            "stage": "noise_correct",
            "mode": "repair",
            "problem": problem,
            "verdict": "repair",
            "proposed_sql": sql,
            "accepted": False,
        }
        update: dict[str, Any] = {}
        if sql:
            fixed = self._execute(sql, cfg)
            entry.update(self._outcome(fixed))
            if fixed.ok and (problem == "error" or not answer_is_empty(fixed.rows)):
                entry["accepted"] = True
                update = {"sql": sql, "result": fixed.to_dict(), "stage": "noise_correct"}
        entry.update(meter.cost())
        final_sql = update.get("sql", state.get("sql") or "")
        return {**update, "sql_by_stage": {"noise_correct": final_sql}, "trace": [entry]}

    def continue_write(
        self, state: RouteState, runtime: Runtime[RouteConfig], config: RunnableConfig
    ) -> dict[str, Any]:
        """MCP step 4: complete a truncated SQL; keep it if it executes (and returns rows).

        On the full schema (``cw_full_schema``), as the ROUTE reference does: that is how it
        recovers a column that schema linking dropped.
        """
        cfg = self.settings(runtime)
        meter = _Meter()
        current_ok = bool(state.get("result", {}).get("ok"))
        links = state.get("links") if cfg.schema_linking and not cfg.cw_full_schema else None
        msgs = self._messages("cw", state, cfg, links=links)
        prefill = stage_prefill("cw", cfg.view())
        answer = prompts.parse_sql(self._ask(meter, msgs, prefill, cfg, config, name="continue_write"))
        sql = prompts.join_continuation(cfg.continuation_prefix, answer) if answer else None
        result = self._execute(sql, cfg)
        needs_rows = cfg.cw_requires_rows and current_ok
        accepted = result.ok and (result.row_count > 0 or not needs_rows)
        entry = {
            "stage": "continue_write",
            "reason": "hard" if current_ok else "not_executable",
            "schema": "reduced" if links else "full",
            "proposed_sql": sql,
            "accepted": accepted,
            **self._outcome(result),
            **meter.cost(),
        }
        update: dict[str, Any] = {}
        if accepted:
            update = {"sql": sql, "result": result.to_dict(), "stage": "continue_write"}
        final_sql = update.get("sql", state.get("sql") or "")
        return {**update, "sql_by_stage": {"continue_write": final_sql}, "trace": [entry]}

    def _nothing_executes(self, state: Mapping[str, Any]) -> bool:
        """True when no candidate the finalize vote could pick has executed (rescue's condition)."""
        if (state.get("result") or {}).get("ok") or (state.get("draft_result") or {}).get("ok"):
            return False
        return not any(s.get("executed") for s in state.get("samples") or ())

    def _guess_names(self, sql: str, result: ExecutionResult, cfg: RouteConfig) -> tuple[str, ExecutionResult] | None:
        """``repair.RESCUE_RULES``: ``join_owner_table`` and ``closest_name_fix`` after the exact re-qualification,
        one error at a time, up to ``MAX_REQUALIFY_STEPS`` steps; the executing SQL, or None."""
        current, current_result = sql, result
        for _ in range(MAX_REQUALIFY_STEPS):
            fixed = None
            for repair in RESCUE_RULES:  # exact first, then guesses
                fixed = fixed or repair(current, current_result.error, self.db.schema, self.db.dialect)
            if fixed is None or fixed == current:
                return None
            current, current_result = fixed, self._execute(fixed, cfg)
            if current_result.ok:
                return current, current_result
        return None

    def rescue(self, state: RouteState, runtime: Runtime[RouteConfig], config: RunnableConfig) -> dict[str, Any]:
        """Last resort when no candidate executes: name guesses on every failing SQL, then up to
        ``rescue_samples`` sampled repairs (NC's repair prompt on the full schema, with the error);
        the first SQL that executes is the answer.

        Measured reason (400 valid questions, untuned 0.5B): 13% of final answers failed to execute
        after draft, generate, NC repair (greedy: 0 of 105 taken) and CW; a failing answer is always
        wrong, so any executing one can only gain.
        """
        cfg = self.settings(runtime)
        meter = _Meter()
        entry: dict[str, Any] = {"stage": "rescue", "proposed_sql": None, "accepted": False, "attempts": []}
        failing = [state.get("sql") or "", *(state.get("sql_by_stage") or {}).values(), state.get("draft_sql") or ""]
        failing += [e["proposed_sql"] for e in state.get("trace") or () if e.get("proposed_sql")]
        found: tuple[str, ExecutionResult] | None = None
        for sql in dict.fromkeys(s for s in failing if s):
            found = self._guess_names(sql, self._execute(sql, cfg), cfg)
            entry["attempts"].append({"kind": "names", "from": sql, "sql": found[0] if found else None})
            if found:
                break
        current = ExecutionResult.from_dict(state.get("result") or {}) if state.get("result") else self._execute(None, cfg)
        feedback = execution_feedback(current, cfg.view())
        msgs = self._messages("nc_repair", state, cfg, sql=state.get("sql") or "", feedback=feedback)
        for _ in range(cfg.rescue_samples if found is None else 0):
            sql = prompts.parse_sql(
                self._ask(meter, msgs, stage_prefill("nc_repair", cfg.view()), cfg, config,
                          name="rescue.repair", temperature=cfg.sample_temperature)
            )
            result = self._execute(sql, cfg)
            if sql and not result.ok:
                found = self._guess_names(sql, result, cfg)
            elif result.ok:
                found = (sql or "", result)
            entry["attempts"].append({"kind": "sample", "from": sql, "sql": found[0] if found else None})
            if found:
                break
        update: dict[str, Any] = {}
        if found:
            sql, result = found
            entry.update(proposed_sql=sql, accepted=True, **self._outcome(result))
            update = {"sql": sql, "result": result.to_dict(), "stage": "rescue"}
        entry.update(meter.cost())
        return {**update, "sql_by_stage": {"rescue": update.get("sql", state.get("sql") or "")}, "trace": [entry]}

    def finalize(self, state: RouteState, runtime: Runtime[RouteConfig]) -> dict[str, Any]:
        """Pick the answer: by the vote of the candidates' results (``vote``), else the current SQL,
        or (if it fails) the latest candidate that executed.

        With ``fallback_to_executable`` off, a failing current SQL is returned as it is (no vote).
        """
        cfg = self.settings(runtime)
        result = state.get("result") or {}
        entry: dict[str, Any] = {"stage": "finalize", "winner": state.get("stage", "generate")}
        if cfg.vote and (result.get("ok") or cfg.fallback_to_executable):
            voted = self._vote(state, cfg, entry)
            if voted is not None:
                return voted
        if not result.get("ok") and cfg.fallback_to_executable:
            for step in reversed(state.get("trace", [])):
                sql = step.get("proposed_sql")
                if step.get("executed") and sql and sql != state.get("sql"):
                    fallback = self._execute(sql, cfg)
                    if fallback.ok:
                        entry.update(winner=step["stage"], fallback=True)
                        return {
                            "sql": sql,
                            "result": fallback.to_dict(),
                            "stage": step["stage"],
                            "trace": [entry],
                        }
        return {"trace": [entry]}

    def _vote(self, state: RouteState, cfg: RouteConfig, entry: dict[str, Any]) -> dict[str, Any] | None:
        """The finalize update chosen by ``results.vote_by_result``; None when no candidate executed.

        Candidates are the draft, generate's SQL, and the NC and CW SQL each stage took (a
        rejected proposal is no candidate), in pipeline order; results already in the state are
        reused, the others re-executed (the state keeps no result per candidate, to stay small).
        The self-consistency samples that executed come first (their results are kept in
        ``samples``): on a tie a greedy stage's answer beats a sampled one. The trace entry shows
        each group's stages (``sample1``... for samples), size and row count; ties go to non-empty
        results, then to the group holding the latest stage.
        """
        by_stage = state.get("sql_by_stage") or {}
        ran = {e.get("stage"): e for e in state.get("trace") or []}
        known: dict[str, dict[str, Any] | None] = {
            state.get("draft_sql") or "": state.get("draft_result"),
            state.get("sql") or "": state.get("result"),
        }
        results: dict[str, ExecutionResult] = {}
        candidates: list[tuple[str, str, str, ExecutionResult]] = []  # name, stage, sql, result
        for sample in sorted(state.get("samples") or [], key=lambda s: s["index"]):
            if sample.get("executed") and sample.get("sql"):
                result = ExecutionResult.from_dict(sample["result"])
                results.setdefault(sample["sql"], result)
                candidates.append((sample["name"], SAMPLE_STAGE, sample["sql"], result))
        sampled = len(candidates)
        for name, stage in VOTE_CANDIDATES:
            sql = by_stage.get(name)
            step = ran.get(stage)
            if not sql or step is None or (stage in ACCEPTING_STAGES and not step.get("accepted")):
                continue
            if sql not in results:
                cached = known.get(sql)
                # Through to_dict for all alike: stored results hold JSON values (bytes as hex text).
                results[sql] = ExecutionResult.from_dict(cached or self._execute(sql, cfg).to_dict())
            if results[sql].ok:
                candidates.append((name, stage, sql, results[sql]))
        if not candidates:
            return None
        vote = vote_by_result([(name, res.rows) for name, _, _, res in candidates])
        rows = {name: res.row_count for name, _, _, res in candidates}
        entry["vote"] = {
            "groups": [
                {"stages": list(group), "size": len(group), "rows": rows[group[0]], "empty": empty}
                for group, empty in zip(vote.groups, vote.empty)
            ],
            "winner": vote.winner,
        }
        if sampled:
            entry["vote"]["samples"] = sampled
        name, stage, sql, result = next(c for c in candidates if c[0] == vote.winner)
        if sql == (state.get("sql") or "") and (state.get("result") or {}).get("ok"):
            return {"trace": [entry]}  # the pipeline's own answer won
        entry.update(winner=stage, changed=True)
        if not (state.get("result") or {}).get("ok"):
            entry["fallback"] = True
        return {"sql": sql, "result": result.to_dict(), "stage": stage, "trace": [entry]}

    # ---------------------------------------------------------------- routers
    def route_start(self, state: RouteState, runtime: Runtime[RouteConfig]) -> Literal["schema_link", "generate"]:
        """Schema linking first, unless it is switched off."""
        return "schema_link" if self.settings(runtime).schema_linking else "generate"

    def _needs_continuation(self, state: RouteState, cfg: RouteConfig) -> bool:
        if not cfg.continuation_writing:
            return False
        if not (state.get("result") or {}).get("ok"):
            return True
        return is_hard(state.get("sql") or "", self.db.schema, cfg.difficulty_threshold, self.db.dialect)

    def route_generate(
        self, state: RouteState, runtime: Runtime[RouteConfig]
    ) -> list[Send] | Literal["noise_correct", "continue_write", "finalize"]:
        """After generate: K self-consistency samples first when they are on (and can be voted on),
        else straight on as ``route_after_generate`` says (the ``self_consistency`` join asks it later)."""
        cfg = self.settings(runtime)
        if cfg.self_consistency > 0 and cfg.vote:
            task = {
                "question": state["question"],
                "hint": state.get("hint"),
                "links": state.get("links"),
                "value_matches": state.get("value_matches"),
            }
            return [Send("sample_generate", {**task, "index": i}) for i in range(1, cfg.self_consistency + 1)]
        return self.route_after_generate(state, runtime)

    def route_after_generate(
        self, state: RouteState, runtime: Runtime[RouteConfig]
    ) -> Literal["noise_correct", "continue_write", "rescue", "finalize"]:
        """Noise correction if on; else continuation writing for failing or hard SQL."""
        cfg = self.settings(runtime)
        if cfg.noise_correction:
            return "noise_correct"
        return "continue_write" if self._needs_continuation(state, cfg) else self._finish(state, cfg)

    def route_after_correction(
        self, state: RouteState, runtime: Runtime[RouteConfig]
    ) -> Literal["continue_write", "rescue", "finalize"]:
        """Continuation writing when the SQL still fails to execute or is hard (h(s, d) > threshold)."""
        cfg = self.settings(runtime)
        return "continue_write" if self._needs_continuation(state, cfg) else self._finish(state, cfg)

    def route_after_continuation(self, state: RouteState, runtime: Runtime[RouteConfig]) -> Literal["rescue", "finalize"]:
        """The rescue stage when nothing executes yet, else finalize."""
        return self._finish(state, self.settings(runtime))

    def _finish(self, state: Mapping[str, Any], cfg: RouteConfig) -> Literal["rescue", "finalize"]:
        return "rescue" if cfg.rescue and self._nothing_executes(state) else "finalize"

    # ---------------------------------------------------------------- conversation and review
    def new_question(
        self, state: RouteState, runtime: Runtime[RouteConfig], config: RunnableConfig
    ) -> dict[str, Any]:
        """First node of every run: take up this run's question, drop what the last one left.

        A thread keeps its state between runs; without this reset an earlier question's trace,
        stage SQL and fallback candidates would leak into this one. The input is checked here,
        before any model call (``InputError``, ``ConfigError``).
        """
        cfg = self.settings(runtime)
        if cfg.review_before_execution and (config.get("configurable") or {}).get(CONFIG_KEY_CHECKPOINTER) is None:
            raise ConfigError(
                "review_before_execution pauses the run until you resume it, which needs a checkpointer: "
                "build_route_graph(llm, db, checkpointer=InMemorySaver()) and invoke with "
                "config={'configurable': {'thread_id': ...}} (Studio and langgraph dev provide both)."
            )
        turn = chat.resolve_question(state)
        hint = state.get("hint")
        if hint is not None and not isinstance(hint, str):
            raise InputError(f"The hint must be a string or None, got {type(hint).__name__}.")
        cfg.check_input(turn.question, hint)
        update: dict[str, Any] = {
            "question": turn.question,
            "asked_question": turn.question,
            "follow_up": turn.follow_up,
            "links": {},
            "draft_sql": None,
            "draft_result": None,
            "sql": "",
            "result": {},
            "stage": "",
            "value_matches": None,
            "sql_by_stage": Overwrite({}),
            "samples": Overwrite([]),
            "trace": Overwrite([]),
        }
        if turn.ask is not None:
            update["messages"] = [turn.ask]
        return update

    def rewrite_question(
        self, state: RouteState, runtime: Runtime[RouteConfig], config: RunnableConfig
    ) -> dict[str, Any]:
        """A chat follow-up ("and in France?") becomes a standalone question: the stages see no history."""
        cfg = self.settings(runtime)
        meter = _Meter()
        original = state["question"]
        history = chat.chat_history(state.get("messages") or [], cfg.history_messages)
        answer = self._ask(
            meter, prompts.rewrite_messages(history, original), "", cfg, config, name="rewrite_question"
        )
        question = prompts.parse_rewrite(answer, original)
        entry = {"stage": "rewrite_question", "original": original, "question": question, **meter.cost()}
        return {"question": question, "asked_question": question, "trace": [entry]}

    def review(self, state: RouteState, runtime: Runtime[RouteConfig]) -> dict[str, Any]:
        """Human review (``review_before_execution``): the final SQL waits in ``interrupt()``.

        Approved or edited SQL is executed through the guarded executor for the answer; rejected
        SQL gives no answer. An unusable resume value is asked for again (the payload then says
        why), since LangGraph keeps every resume value. The node reruns from its start on resume,
        so nothing happens before the interrupt.
        """
        cfg = self.settings(runtime)
        proposed = state.get("sql") or ""
        payload: dict[str, Any] = {
            "question": state.get("question"),
            "sql": proposed,
            "stage": state.get("stage"),
            "actions": ["approve", "edit", "reject"],
        }
        while True:
            try:
                action, sql = chat.review_decision(interrupt(payload), proposed)
                break
            except InputError as exc:
                payload = {**payload, "error": str(exc)}
        entry: dict[str, Any] = {"stage": "review", "action": action, "proposed_sql": sql}
        if action == "reject":
            rejected = ExecutionResult(sql=sql, ok=False, error=REJECTED_ERROR, error_kind="rejected")
            entry.update(accepted=False, executed=False)
            return {"sql": "", "result": rejected.to_dict(), "stage": "review", "trace": [entry]}
        result = self._execute(sql, cfg)
        entry.update(accepted=True, **self._outcome(result))
        update: dict[str, Any] = {"sql": sql, "result": result.to_dict(), "trace": [entry]}
        if action == "edit":
            update["stage"] = "review"
        return update

    def respond(
        self, state: RouteState, runtime: Runtime[RouteConfig], config: RunnableConfig
    ) -> dict[str, Any]:
        """Close the turn: append the answer (SQL + a small table) to ``messages``; the hint was this
        question's only."""
        cfg = self.settings(runtime)
        sql = state.get("sql") or ""
        result = state.get("result") or {}
        update: dict[str, Any] = {"hint": None}
        words = None
        if cfg.answer_in_words and result.get("ok"):
            meter = _Meter()
            feedback = execution_feedback(ExecutionResult.from_dict(result), cfg.view())
            words = self._ask(
                meter, prompts.answer_messages(state["question"], sql, feedback), "", cfg, config,
                name="respond.answer",
            )
            update["trace"] = [{"stage": "respond", "answer": words.strip(), **meter.cost()}]
        update["messages"] = [chat.reply_message(chat.format_reply(sql, result, cfg.reply_rows, words))]
        return update

    def route_question(
        self, state: RouteState, runtime: Runtime[RouteConfig]
    ) -> Literal["rewrite_question", "schema_link", "generate"]:
        """A chat follow-up is rewritten first; any other question goes to the first MCP stage."""
        if state.get("follow_up") and self.settings(runtime).history_messages > 0:
            return "rewrite_question"
        return self.route_start(state, runtime)

    def route_after_finalize(self, state: RouteState, runtime: Runtime[RouteConfig]) -> Literal["review", "respond"]:
        """Human review of the final SQL when ``review_before_execution`` is on."""
        return "review" if self.settings(runtime).review_before_execution else "respond"
