"""Extras: options off by default, built into the graph only when asked for.

``build_route_graph(llm, db, extras=["self_consistency"])`` (a name takes the extra's defaults) or
``extras=[SelfConsistency(samples=8), ValueRetrieval(limit=4)]``. An extra adds its nodes, its state
keys and its edges when the graph is compiled, in the spirit of LangChain v1's agent middleware;
without it the graph has none of them and does none of its work. Its settings are given with it,
at build time; the per-run context (``RouteConfig``) keeps the stage switches and limits.

| extra | adds | for |
| --- | --- | --- |
| ``self_consistency`` (``SelfConsistency(samples=5)``) | nodes ``sample_generate`` (K at once, one ``Send`` each) and ``self_consistency`` (their join); state ``samples`` | K more SQL sampled from generate's prompt at ``RouteConfig.sample_temperature`` join the finalize vote (K more model calls; none with ``vote`` off). Not measured yet. |
| ``value_retrieval`` (``ValueRetrieval(limit=8, threshold=85.0)``) | node ``retrieve_values`` before the first MCP stage; state ``value_matches`` | the question's and hint's phrases matched against the database's text values (``route_graph.values``), shown after the schema in every SQL-writing prompt. For BIRD-style data with messy values; measured not to pay on Spider (benchmarks/RESULTS.md). |

Options that change how a stage works on the state every graph has stay ``RouteConfig`` switches
(``nc_verdict``, ``recall_first_linking``, ``review_before_execution``, ``answer_in_words``, ...).

The command line and stored runs name an extra's settings by the ``RouteConfig`` fields they were
before (``former_fields``): ``route-sql eval --set self_consistency=5`` builds ``SelfConsistency(5)``
(``parse_overrides``; ``split_fields`` for a dict), and a run's recorded ``route_config`` keeps
those names (``former_values``).

Adding an extra: a frozen dataclass subclass of ``Extra`` here (its ``name``, settings, state keys
and former fields) added to ``EXTRAS``; its nodes as ``stages.Stage`` rows with ``extra=`` its
name; and an ``install(graph, pipe, routes, extra)`` in its node module that adds the nodes and
their edges (and sets the ``Routes`` hook it enters through). This module imports nothing heavy
(the CLI reads it to parse ``--set``).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from route_graph.errors import ConfigError
from route_graph.graph.context import MAX_SELF_CONSISTENCY, parse_config_overrides
from route_graph.graph.stages import STAGES, Stage

if TYPE_CHECKING:
    from langgraph.graph import StateGraph

    from route_graph.graph.pipeline import Pipeline
    from route_graph.graph.routes import Routes

__all__ = [
    "EXTRAS",
    "Extra",
    "SelfConsistency",
    "ValueRetrieval",
    "former_values",
    "parse_overrides",
    "resolve_extras",
    "split_fields",
]


@dataclass(frozen=True)
class Extra:
    """A build-time plug-in: its settings are its fields; the class says what it adds."""

    #: How ``extras=[...]``, Studio's ``extras`` and ``ROUTE_GRAPH_EXTRAS`` name it.
    name: ClassVar[str]
    #: Its settings under the ``RouteConfig`` field names they had before extras, with their
    #: values when the extra is absent (``--set`` and stored runs use these names).
    former_fields: ClassVar[dict[str, Any]]

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The nodes it adds (``stages.STAGES`` rows whose ``extra`` is its name)."""
        return tuple(s for s in STAGES if s.extra == self.name)

    def state(self) -> dict[str, Any]:
        """The state keys it adds: name -> annotation (a reducer in ``Annotated``, as in ``RouteState``)."""
        return {}

    def reset(self) -> dict[str, Any]:
        """What ``new_question`` writes to its state keys, so a thread's next question starts clean."""
        return {}

    def fields(self) -> dict[str, Any]:
        """Its settings under their former field names (``former_fields``' keys)."""
        raise NotImplementedError

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> Extra | None:
        """The extra its former fields ask for (``--set``), or None when they leave it off."""
        raise NotImplementedError

    def install(self, graph: StateGraph, pipe: Pipeline, routes: Routes) -> None:
        """Add its nodes and their edges to ``graph``, and enter the pipeline through ``routes``."""
        raise NotImplementedError


@dataclass(frozen=True)
class SelfConsistency(Extra):
    """``samples`` more SQL drawn from generate's prompt, executed, and voted on in finalize."""

    samples: int = 5

    name: ClassVar[str] = "self_consistency"
    former_fields: ClassVar[dict[str, Any]] = {"self_consistency": 0}

    def __post_init__(self) -> None:
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or not 1 <= self.samples <= MAX_SELF_CONSISTENCY:
            raise ConfigError(
                f"SelfConsistency.samples must be 1 to {MAX_SELF_CONSISTENCY} samples, got {self.samples!r} "
                "(to sample none, leave the extra out)."
            )

    def state(self) -> dict[str, Any]:
        # One dict per sample, written by the concurrent sample_generate runs: an additive reducer.
        return {"samples": Annotated[list[dict[str, Any]], operator.add]}

    def reset(self) -> dict[str, Any]:
        from langgraph.types import Overwrite  # past the reducer

        return {"samples": Overwrite([])}

    def fields(self) -> dict[str, Any]:
        return {"self_consistency": self.samples}

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> SelfConsistency | None:
        samples = values.get("self_consistency", 0)
        return None if samples == 0 else cls(samples)

    def install(self, graph: StateGraph, pipe: Pipeline, routes: Routes) -> None:
        from route_graph.graph.self_consistency import install

        install(graph, pipe, routes, self)


@dataclass(frozen=True)
class ValueRetrieval(Extra):
    """The database's text values that the question and hint name, shown in every SQL-writing prompt.

    ``limit``: most values shown in a prompt; ``threshold``: least rapidfuzz ratio (0-100,
    lowercased) of a fuzzy match (exact matches always count). The index is built once per
    database and cached (``route_graph.values``).
    """

    limit: int = 8
    threshold: float = 85.0

    name: ClassVar[str] = "value_retrieval"
    former_fields: ClassVar[dict[str, Any]] = {
        "value_retrieval": False, "value_match_limit": 8, "value_match_threshold": 85.0,
    }

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ConfigError(f"ValueRetrieval.limit must be >= 0, got {self.limit!r}.")
        if not 0 <= self.threshold <= 100:
            raise ConfigError(f"ValueRetrieval.threshold must be 0 to 100, got {self.threshold!r}.")

    def state(self) -> dict[str, Any]:
        return {"value_matches": list[dict[str, Any]]}  # values.ValueMatch.to_dict, this question's

    def fields(self) -> dict[str, Any]:
        return {"value_retrieval": True, "value_match_limit": self.limit, "value_match_threshold": self.threshold}

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> ValueRetrieval | None:
        if not values.get("value_retrieval", False):
            return None
        defaults = cls.former_fields
        return cls(
            int(values.get("value_match_limit", defaults["value_match_limit"])),
            float(values.get("value_match_threshold", defaults["value_match_threshold"])),
        )

    def install(self, graph: StateGraph, pipe: Pipeline, routes: Routes) -> None:
        from route_graph.graph.retrieve_values import install

        install(graph, pipe, routes, self)


#: Every extra, by name, in the order the pipeline meets them.
EXTRAS: dict[str, type[Extra]] = {cls.name: cls for cls in (ValueRetrieval, SelfConsistency)}


def resolve_extras(extras: Iterable[Extra | str] | str | None) -> tuple[Extra, ...]:
    """``extras=`` as given (names with their defaults, ``Extra`` objects, or ``"a,b"``) -> the
    extras, in pipeline order; an unknown name or an extra given twice is a ``ConfigError``."""
    if extras is None:
        return ()
    items = [p.strip() for p in extras.split(",") if p.strip()] if isinstance(extras, str) else list(extras)
    chosen: dict[str, Extra] = {}
    for item in items:
        if isinstance(item, str):
            cls = EXTRAS.get(item.strip().lower())
            if cls is None:
                raise ConfigError(f"Unknown extra {item!r}; the extras are {', '.join(EXTRAS)}.")
            item = cls()
        if not isinstance(item, Extra):
            raise ConfigError(f"An extra is a name ({', '.join(EXTRAS)}) or an Extra object, got {type(item).__name__}.")
        if item.name in chosen:
            raise ConfigError(f"The extra {item.name!r} is given twice.")
        chosen[item.name] = item
    return tuple(chosen[name] for name in EXTRAS if name in chosen)


def former_values(extras: Iterable[Extra]) -> dict[str, Any]:
    """Every extra's former ``RouteConfig`` fields with the values ``extras`` give them (the
    absent ones' off values): how a run records them, as it did before extras."""
    given = {extra.name: extra for extra in extras}
    out: dict[str, Any] = {}
    for name, cls in EXTRAS.items():
        out.update(given[name].fields() if name in given else cls.former_fields)
    return out


def split_fields(values: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[Extra, ...]]:
    """Typed settings under ``RouteConfig`` field names, the extras' former fields among them
    (``{"nc_verdict": True, "self_consistency": 2}``) -> (the ``RouteConfig`` fields, the extras)."""
    former = _former_fields()
    mine = {name: value for name, value in values.items() if name in former}
    extras = tuple(e for cls in EXTRAS.values() if (e := cls.from_fields(mine)) is not None)
    return {name: value for name, value in values.items() if name not in former}, extras


def parse_overrides(pairs: Iterable[str]) -> tuple[dict[str, Any], tuple[Extra, ...]]:
    """``--set FIELD=VALUE`` pairs -> (``RouteConfig`` fields, extras), each value read as its field's type.

    A pair naming an extra's former field asks for that extra: ``self_consistency=5`` gives
    ``SelfConsistency(5)``, ``value_retrieval=true`` (with ``value_match_limit=...``)
    ``ValueRetrieval``; ``value_retrieval=false`` or ``self_consistency=0`` none.
    """
    former = _former_fields()
    pairs = list(pairs)
    of_extras = [p for p in pairs if p.partition("=")[0].strip() in former]
    _, extras = split_fields(parse_config_overrides(of_extras, former))
    return parse_config_overrides([p for p in pairs if p not in of_extras]), extras


def _former_fields() -> dict[str, Any]:
    return {name: default for cls in EXTRAS.values() for name, default in cls.former_fields.items()}
