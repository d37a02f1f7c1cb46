"""Every per-run knob of the MCP pipeline in one dataclass (LangGraph ``context_schema``; Studio shows it).

Defaults follow the ROUTE reference on Spider: 3 sample rows when linking on the full schema,
10 when generating on the reduced one, a 5 s execution timeout, near-greedy decoding (decoding
itself is the chat model's business), and continuation writing for "hard" SQL (h(s, d) > 2).
Switching a stage off is how the paper's ablations are run.

A per-run ``context`` overrides only the fields it names: LangGraph turns a context dict into
``RouteConfig(**dict)``, and every ``RouteConfig`` remembers which fields its constructor was given
(``named_fields``), so ``context={"noise_correction": False}`` and
``context=RouteConfig(noise_correction=False)`` both keep the build-time config's other fields.

Options that add nodes and state (self-consistency, value retrieval) are not fields here: they are
build-time extras (``route_graph.graph.extras``). Their former field names (``MOVED_TO_EXTRAS``)
raise a ``ConfigError`` that says so. What the options kept off were measured to give is in
``benchmarks/RESULTS.md`` (``MEASURED``), not in the field descriptions.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal, Self

from route_graph.errors import ConfigError, InputError
from route_graph.graph.stages import STAGE_ALIASES, STAGES

if TYPE_CHECKING:
    from route_graph.views.config import ViewConfig

__all__ = [
    "MAX_SELF_CONSISTENCY", "MEASURED", "MOVED_TO_EXTRAS", "STAGE_NAMES", "PromptStyle", "RouteConfig",
    "parse_config_overrides",
]

PromptStyle = Literal["zero_shot", "few_shot"]
#: Most sampled model calls per question of one kind (self-consistency samples, rescue repairs).
MAX_SELF_CONSISTENCY = 16
#: Where the options kept off by default have their measurements.
MEASURED = "benchmarks/RESULTS.md#options-measured-not-to-pay-kept-off"
#: Former fields, now settings of a build-time extra (``route_graph.graph.extras``): field -> extra.
MOVED_TO_EXTRAS: dict[str, str] = {
    "self_consistency": "self_consistency",
    "value_retrieval": "value_retrieval",
    "value_match_limit": "value_retrieval",
    "value_match_threshold": "value_retrieval",
}
#: The stages ``with_stages`` (and ``--stages``) can name, in pipeline order (``stages.STAGES``).
STAGE_NAMES: tuple[str, ...] = STAGE_ALIASES


def _describe(text: str, default: Any) -> Any:
    return field(default=default, metadata={"description": text})


def _moved(names: Collection[str]) -> ConfigError | None:
    """The error for a former field that is now an extra's setting (None if ``names`` holds none)."""
    name = next((n for n in names if n in MOVED_TO_EXTRAS), None)
    if name is None:
        return None
    extra = MOVED_TO_EXTRAS[name]
    return ConfigError(
        f"RouteConfig.{name} is now a setting of the build-time extra {extra!r}: "
        f"build_route_graph(llm, db, extras=[{extra!r}]) (see route_graph.graph.extras; route-sql "
        f"still takes --set {name}=...)."
    )


@dataclass(frozen=True)
class RouteConfig:
    """Configuration of one MCP run; pass as ``context=`` to ``graph.invoke`` or to ``build_route_graph``."""

    schema_linking: bool = _describe(
        "Stage 1 on/off: ask the model for relevant tables/columns and prune the schema.", True
    )
    noise_correction: bool = _describe(
        "Stage 3 on/off: show the model its SQL with execution feedback and accept a correction.", True
    )
    continuation_writing: bool = _describe(
        "Stage 4 on/off: for failing or hard SQL, let the model complete a truncated SQL.", True
    )
    recall_first_linking: bool = _describe(
        "Schema linking errs toward recall, as the ROUTE reference does: tables the question names and "
        "junction tables between linked tables are added, and linked tables keep all their columns "
        "when the full schema fits schema_token_budget. Off (default): the tables/columns the model "
        f"and its draft named, keys kept. Measured: {MEASURED}.",
        False,
    )
    link_sample_rows: int = _describe(
        "Sample rows per table in prompts on the full schema (linking, NC, draft SQL, CW, rescue): "
        "most of a question's prompt tokens. 0 here and generate_sample_rows=5 suit a small context. "
        f"Measured: {MEASURED}.",
        3,
    )
    generate_sample_rows: int = _describe(
        "Sample rows per table in the generation prompt on the reduced schema.", 10
    )
    schema_format: Literal["ddl", "compact"] = _describe(
        "How prompts show the schema: 'ddl' (CREATE TABLE + sample-row blocks, the ROUTE reference) "
        "or 'compact' (one line per table with a few sample values: fewer schema tokens). "
        f"Measured: {MEASURED}.",
        "ddl",
    )
    schema_token_budget: int = _describe(
        "Most (estimated) tokens of schema text in one prompt; past it sample values, then columns "
        "and tables the question does not need are left out. Keep it under the model's context "
        "minus ~1,000 tokens for instructions and answer. 0 = no limit.",
        6000,
    )
    execution_timeout_s: float = _describe(
        "Wall-clock limit for one SQL execution, in seconds; the query is interrupted after it.", 5.0
    )
    max_rows: int = _describe("At most this many result rows are fetched from any query.", 1000)
    feedback_rows: int = _describe(
        "Rows of the result shown to the model in noise-correction feedback.", 5
    )
    feedback_value_chars: int = _describe(
        "Long values in feedback and sample rows are cut to this many characters.", 60
    )
    difficulty_threshold: int = _describe(
        "Continuation writing runs when h(s, d) exceeds this (h = tables touched; 3+ = hard).", 2
    )
    continuation_prefix: str = _describe(
        "Truncated SQL given to the model in continuation writing (the reference uses 'SELECT ').",
        "SELECT ",
    )
    cw_requires_rows: bool = _describe(
        "Keep a continuation only if it executes and returns at least one row.", True
    )
    cw_full_schema: bool = _describe(
        "Continuation writing sees the full schema (link_sample_rows sample rows), as the ROUTE "
        "reference does, so it can recover a column schema linking dropped; off: the reduced schema.",
        True,
    )
    nc_repair: bool = _describe(
        "Noise correction of SQL that fails, returns no rows or only NULLs asks straight for a repaired "
        "SQL (no verdict); the repair is taken if it executes (and, for an empty/NULL result, returns "
        "rows that are not all NULL). Off: a verdict is asked for every SQL.",
        True,
    )
    nc_verdict: bool = _describe(
        "Noise correction also asks for a verdict on SQL that executes and returns rows (ROUTE's NC "
        "verdict, which MSFT trains: for a fine-tuned model). Off (default): only failing, empty or "
        f"NULL SQL is repaired (nc_repair). Measured: {MEASURED}.",
        False,
    )
    requalify_columns: bool = _describe(
        "Before noise correction, fix 'no such column: T2.x' without a model: when exactly one table "
        "joined in the query has x, re-qualify it (sqlglot) and keep the SQL if it executes.",
        True,
    )
    vote: bool = _describe(
        "Finalize picks by execution agreement: the candidates that executed (draft, generate, the NC and "
        "CW SQL each stage took) are grouped by result (the evaluation's comparison) and the largest "
        "group wins; ties go to non-empty results, then to the latest stage. Off: the current SQL.",
        True,
    )
    fallback_to_executable: bool = _describe(
        "If the final SQL does not execute, return the latest earlier candidate that did "
        "(e.g. the full-schema draft) instead of a failing query (off: no vote either).",
        True,
    )
    answer_prefill: bool = _describe(
        "Start each answer with its expected opening (a ```sql fence, '{' for links, the CW prefix) "
        "on backends that continue a prefilled reply (in-process, vLLM): small models then answer "
        "at once instead of explaining first, several times faster. Used where the provider "
        "supports it (route_graph.model_capabilities); a provider that rejects it is retried without it, once.",
        True,
    )
    constrained_json: bool = _describe(
        "Ask for the schema links as JSON-schema constrained output where the provider supports it "
        "(OpenAI-compatible response_format, Ollama's format); off: a plain prompt, parsed leniently.",
        True,
    )
    prompt_style: PromptStyle = _describe(
        "'zero_shot' for fine-tuned (MSFT) models, 'few_shot' adds worked examples for base models.",
        "zero_shot",
    )
    review_before_execution: bool = _describe(
        "Pause before the answer is returned: the final SQL is shown through LangGraph interrupt() and "
        "is executed for the answer only after approve or edit (resume with Command(resume=...)); "
        "needs a checkpointer. The stages still run candidate SQL read-only to judge it.",
        False,
    )
    history_messages: int = _describe(
        "Most recent chat messages shown to the model when it rewrites a follow-up into a standalone "
        "question (input given as messages).",
        6,
    )
    reply_rows: int = _describe(
        "Result rows shown in the chat reply's table (the full result stays in 'result').", 10
    )
    stream_internal_calls: bool = _describe(
        "Let stream_mode='messages' (and Studio's chat) stream the tokens of the internal model calls "
        "(schema links, drafts, repairs) too; off: only the reply streams, the stages show in 'updates'.",
        False,
    )
    answer_in_words: bool = _describe(
        "Add a one-sentence natural-language answer from the result to the chat reply (one more model call).",
        False,
    )
    sample_temperature: float = _describe(
        "Sampling temperature of the rescue repairs and of the self-consistency samples (the "
        "self_consistency extra) (> 0). A model that ignores a per-call temperature gives greedy duplicates.",
        0.7,
    )
    rescue: bool = _describe(
        "Last resort when no candidate SQL executes (draft, generate, NC, CW, samples all fail): guess "
        "the closest existing name for the column/table the error names (route_graph.repair), then ask "
        "for up to rescue_samples repairs sampled at sample_temperature; the first that executes is "
        "the answer. It only replaces answers that fail (always wrong), so it cannot break one.",
        True,
    )
    rescue_samples: int = _describe(
        f"Most sampled model repairs the rescue stage asks for (0: only the name guesses; at most "
        f"{MAX_SELF_CONSISTENCY}); it stops at the first that executes.",
        4,
    )

    max_question_chars: int = _describe(
        "Longest question accepted, in characters; a longer one fails at once with an InputError "
        "(before any model call) instead of being sent to the model and cut silently.",
        2000,
    )
    max_hint_chars: int = _describe(
        "Longest hint (BIRD's evidence) accepted, in characters; a longer one fails like a long question.",
        4000,
    )

    def check_input(self, question: str | None, hint: str | None = None) -> None:
        """Raise ``InputError`` for an over-long question or hint (the graph's first node calls this)."""
        for what, text, limit, name in (
            ("question", question, self.max_question_chars, "max_question_chars"),
            ("hint", hint, self.max_hint_chars, "max_hint_chars"),
        ):
            if text is not None and len(text) > limit:
                raise InputError(
                    f"The {what} is {len(text):,} characters long; at most {limit:,} are accepted. Shorten it, "
                    f"or raise RouteConfig.{name}."
                )

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        moved = _moved(kwargs)
        if moved is not None:  # before the dataclass's "unexpected keyword argument"
            raise moved
        # Remember the fields the caller named, so a per-run context overrides only those.
        self = super().__new__(cls)
        named = [f.name for f in fields(cls)][: len(args)] + list(kwargs)
        object.__setattr__(self, "_named", frozenset(named))
        return self

    @property
    def named_fields(self) -> frozenset[str]:
        """Fields given to the constructor (all of them for ``replace``/``with_stages`` copies)."""
        return getattr(self, "_named", frozenset())

    def override(self, context: RouteConfig | Mapping[str, Any] | None) -> RouteConfig:
        """This config with the fields a per-run context names replaced (dict keys, or a
        ``RouteConfig``'s ``named_fields``); ``None`` or nothing named leaves it unchanged."""
        if context is None:
            return self
        if isinstance(context, RouteConfig):
            values = {name: getattr(context, name) for name in context.named_fields}
        elif isinstance(context, Mapping):
            values = dict(context)
        else:
            raise ConfigError(
                f"A run's context must be a RouteConfig or a dict of its fields, got {type(context).__name__}."
            )
        if not values:
            return self
        moved = _moved(values)
        if moved is not None:
            raise moved
        unknown = sorted(set(values) - {f.name for f in fields(self)})
        if unknown:
            raise ConfigError(
                f"Unknown RouteConfig field(s) {unknown} in the run's context; "
                f"known fields: {', '.join(f.name for f in fields(self))}."
            )
        return replace(self, **values)

    def __post_init__(self) -> None:
        for name in (
            "link_sample_rows", "generate_sample_rows", "feedback_rows", "difficulty_threshold",
            "history_messages", "reply_rows", "max_question_chars", "max_hint_chars",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"RouteConfig.{name} must be >= 0, got {getattr(self, name)!r}.")
        if self.max_rows < 1:
            raise ConfigError(f"RouteConfig.max_rows must be >= 1, got {self.max_rows!r}.")
        if self.execution_timeout_s <= 0:
            raise ConfigError(
                f"RouteConfig.execution_timeout_s must be > 0 seconds, got {self.execution_timeout_s!r}."
            )
        if self.schema_format not in ("ddl", "compact"):
            raise ConfigError(f"RouteConfig.schema_format must be 'ddl' or 'compact', got {self.schema_format!r}.")
        if self.schema_token_budget < 0:
            raise ConfigError(
                f"RouteConfig.schema_token_budget must be >= 0 (0 = no limit), got {self.schema_token_budget!r}."
            )
        if not 0 <= self.rescue_samples <= MAX_SELF_CONSISTENCY:
            raise ConfigError(
                f"RouteConfig.rescue_samples must be 0 to {MAX_SELF_CONSISTENCY}, got {self.rescue_samples!r}."
            )
        if not self.sample_temperature > 0:
            raise ConfigError(f"RouteConfig.sample_temperature must be > 0, got {self.sample_temperature!r}.")
        if self.prompt_style not in ("zero_shot", "few_shot"):
            raise ConfigError(
                f"RouteConfig.prompt_style must be 'zero_shot' or 'few_shot', got {self.prompt_style!r}."
            )

    def with_stages(self, stages: str | set[str] | None) -> RouteConfig:
        """Return a copy with only the named stages on (``"sl,nc,cw,rescue"``; empty = generation only)."""
        if stages is None:
            return self
        names = {s.strip().lower() for s in (stages.split(",") if isinstance(stages, str) else stages)}
        names.discard("")
        unknown = names - set(STAGE_NAMES)
        if unknown:
            raise ConfigError(f"Unknown stage(s) {sorted(unknown)}; use a subset of {','.join(STAGE_NAMES)}.")
        return replace(self, **{s.switch: s.alias in names for s in STAGES if s.alias and s.switch})

    def view(self) -> ViewConfig:
        """The fields that decide what the model sees (``route_graph.views``), as ``finetune`` holds them."""
        # Imported here: the CLI reads this module before anything heavy.
        from route_graph.views.config import ViewConfig

        return ViewConfig.of(self)

    @classmethod
    def field_descriptions(cls) -> dict[str, str]:
        """Field name -> description (for CLIs and docs)."""
        return {f.name: f.metadata.get("description", "") for f in fields(cls)}


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_config_overrides(pairs: Iterable[str], defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``["nc_verdict=true", "schema_format=compact"]`` -> typed ``RouteConfig`` fields.

    The command-line form of a per-run context (``route-sql eval --set``): each value is read as
    its field's type (the default's type: bool, int, float or str). ``defaults`` (name -> default)
    reads other settings alike (``extras.parse_overrides``: the extras' former fields).
    """
    if defaults is None:
        defaults = {f.name: f.default for f in fields(RouteConfig)}
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or name not in defaults:
            moved = _moved([name])
            if moved is not None:
                raise moved
            raise ConfigError(
                f"--set {pair!r}: expected FIELD=VALUE with a RouteConfig field; known fields: {', '.join(defaults)}."
            )
        default = defaults[name]
        try:
            if isinstance(default, bool):
                if text.lower() not in _TRUE | _FALSE:
                    raise ValueError("expected true or false")
                values[name] = text.lower() in _TRUE
            elif isinstance(default, (int, float)):
                values[name] = type(default)(text)
            else:
                values[name] = text
        except ValueError as exc:
            raise ConfigError(f"--set {pair!r}: {name} takes a {type(default).__name__} ({exc}).") from exc
    return values
