"""Self-consistency (the ``self_consistency`` extra): K more answers sampled from generate's prompt.

LangGraph's map-reduce: generate's router returns one ``Send`` per sample (``fan_out``), so
``sample_generate`` runs K times in one step, and the edge from ``sample_generate`` to
``self_consistency`` makes that join run once, after all of them; it then routes on as
``generate`` would have. The samples that execute are further candidates of the finalize vote
(``samples`` in the state). A graph built without the extra has neither the nodes nor the key;
with it, a run with ``vote`` off draws no samples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime
from langgraph.types import Send

from route_graph.graph.calls import Meter
from route_graph.graph.context import RouteConfig
from route_graph.graph.generate import generate_prompt, requalify
from route_graph.graph.pipeline import Node, Pipeline
from route_graph.graph.stages import SAMPLE_GENERATE, SELF_CONSISTENCY
from route_graph.graph.state import RouteState, SampleTask, TraceEntry
from route_graph.results import vote_by_result
from route_graph.views import parsing, stage_prefill

if TYPE_CHECKING:
    from langgraph.graph import StateGraph

    from route_graph.graph.extras import SelfConsistency
    from route_graph.graph.routes import Routes

__all__ = ["SAMPLE_STAGE", "fan_out", "install", "sample_generate", "self_consistency"]

#: The trace stage of the samples (and the answer's ``stage`` when one wins the vote).
SAMPLE_STAGE = SELF_CONSISTENCY.node


def sample_generate(pipe: Pipeline) -> Node:
    """The ``sample_generate`` node of ``pipe`` (its input is one ``SampleTask``)."""

    def node(task: SampleTask, runtime: Runtime[RouteConfig], config: RunnableConfig) -> dict[str, Any]:
        """One self-consistency sample: generate's prompt, sampled at ``sample_temperature``, executed.

        ``route_generate`` sends K of these at once (LangGraph ``Send``), so the K calls are
        concurrent: the transformers engine answers them in one padded batch, llama.cpp serves
        them one by one from its cached prompt prefix, a vLLM server batches them and shares the
        prompt through its prefix cache. A failing call or SQL is recorded, never raised: the
        greedy answer already exists and the run goes on without this sample.
        """
        cfg = pipe.settings(runtime)
        meter = Meter()
        sample: dict[str, Any] = {"name": f"sample{task['index']}", "index": task["index"], "sql": None}
        try:
            msgs, _ = generate_prompt(pipe, task, cfg)
            answer = pipe.model.ask(
                meter, msgs, stage_prefill("generate", cfg.view()), cfg, config,
                name="sample_generate", temperature=cfg.sample_temperature,
            )
        except Exception as exc:  # noqa: BLE001 - one lost sample must not end the run
            sample.update(executed=False, rows=None, error=None, model_error=f"{type(exc).__name__}: {str(exc)[:300]}")
            return {"samples": [{**sample, **meter.cost()}]}
        sql = parsing.parse_sql(answer)
        result = pipe.execute(sql, cfg)
        if cfg.requalify_columns and sql and not result.ok:
            repaired = requalify(pipe, sql, result, cfg)
            if repaired is not None and repaired[1].ok:
                sql, result = repaired
                sample["requalified"] = True
        sample.update(sql=sql, result=result.to_dict(), **pipe.outcome(result), **meter.cost())
        return {"samples": [sample]}

    return node


def self_consistency(pipe: Pipeline) -> Node:
    """The ``self_consistency`` node of ``pipe``: the join of the samples."""

    def node(state: RouteState, runtime: Runtime[RouteConfig]) -> dict[str, Any]:
        """Join of the K ``sample_generate`` runs: one trace entry for the whole sampling stage.

        The samples stay in ``samples`` for finalize's vote; the entry says how many there were,
        how many executed, how many different results they reached, and their cost (model calls
        and tokens summed; seconds of the slowest, since they ran at the same time).
        """
        cfg = pipe.settings(runtime)
        samples = sorted(state.get("samples") or [], key=lambda s: s["index"])
        ran = [s for s in samples if s.get("executed")]
        distinct = len(vote_by_result([(s["name"], s["result"]["rows"]) for s in ran]).groups) if ran else 0
        shown = ("name", "sql", "executed", "rows", "error", "model_error", "requalified")
        entry: TraceEntry = {
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

    return node


def fan_out(extra: SelfConsistency, state: RouteState, cfg: RouteConfig) -> list[Send]:
    """After generate: one ``Send`` to ``sample_generate`` per sample, or none with ``vote`` off
    (the samples would have nothing to join)."""
    if not cfg.vote:
        return []
    task = {
        "question": state["question"],
        "hint": state.get("hint"),
        "links": state.get("links"),
        "value_matches": state.get("value_matches"),
    }
    return [Send(SAMPLE_GENERATE.node, {**task, "index": i}) for i in range(1, extra.samples + 1)]


def install(graph: StateGraph, pipe: Pipeline, routes: Routes, extra: SelfConsistency) -> None:
    """The two nodes and the join's edges; generate's router fans out through ``Routes.fan_out``."""
    # sample_generate's input is the Send payload (SampleTask); input_schema keeps SampleTask's keys
    # out of the state. Every node reads the whole state (see build).
    graph.add_node(SAMPLE_GENERATE.node, sample_generate(pipe), input_schema=graph.state_schema)
    graph.add_node(SELF_CONSISTENCY.node, self_consistency(pipe), input_schema=graph.state_schema)
    graph.add_edge(SAMPLE_GENERATE.node, SELF_CONSISTENCY.node)
    graph.add_conditional_edges(SELF_CONSISTENCY.node, routes.route_after_generate, list(routes.after_generate_targets))
    routes.fan_out = lambda state, cfg: fan_out(extra, state, cfg)
