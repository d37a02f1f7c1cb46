"""Finalize: pick the answer among the candidates the stages left, by what their results agree on.

The candidates are the draft, generate's SQL, the NC, CW and rescue SQL each stage took (a
rejected proposal is no candidate) and the self-consistency samples that executed (``samples``,
only with the self_consistency extra); they are grouped by result (the evaluation's comparison,
``results.vote_by_result``) and the largest group wins (``vote``). When the current SQL fails and nothing wins, the latest earlier candidate that
executed is the answer (``fallback_to_executable``).
"""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from route_graph.graph.context import RouteConfig
from route_graph.graph.pipeline import Node, Pipeline
from route_graph.graph.self_consistency import SAMPLE_STAGE
from route_graph.graph.stages import FINALIZE, GENERATE, STAGES
from route_graph.graph.state import RouteState, TraceEntry
from route_graph.results import vote_by_result
from route_graph.sql.result import ExecutionResult

__all__ = ["VOTE_CANDIDATES", "finalize"]

#: Candidates of the finalize vote, in pipeline order (``sql_by_stage`` key, trace stage name).
VOTE_CANDIDATES: tuple[tuple[str, str], ...] = tuple((s.sql_key, s.node) for s in STAGES if s.sql_key)
#: Stages whose SQL is a candidate only when the stage took it.
ACCEPTING_STAGES = frozenset(s.node for s in STAGES if s.accepting)


def finalize(pipe: Pipeline) -> Node:
    """The ``finalize`` node of ``pipe``."""

    def node(state: RouteState, runtime: Runtime[RouteConfig]) -> dict[str, Any]:
        """Pick the answer: by the vote of the candidates' results (``vote``), else the current SQL,
        or (if it fails) the latest candidate that executed.

        With ``fallback_to_executable`` off, a failing current SQL is returned as it is (no vote).
        """
        cfg = pipe.settings(runtime)
        result = state.get("result") or {}
        entry: TraceEntry = {"stage": FINALIZE.node, "winner": state.get("stage", GENERATE.node)}
        if cfg.vote and (result.get("ok") or cfg.fallback_to_executable):
            voted = _vote(pipe, state, cfg, entry)
            if voted is not None:
                return voted
        if not result.get("ok") and cfg.fallback_to_executable:
            for step in reversed(state.get("trace", [])):
                sql = step.get("proposed_sql")
                if step.get("executed") and sql and sql != state.get("sql"):
                    fallback = pipe.execute(sql, cfg)
                    if fallback.ok:
                        entry.update(winner=step["stage"], fallback=True)
                        return {
                            "sql": sql,
                            "result": fallback.to_dict(),
                            "stage": step["stage"],
                            "trace": [entry],
                        }
        return {"trace": [entry]}

    return node


def _vote(pipe: Pipeline, state: RouteState, cfg: RouteConfig, entry: TraceEntry) -> dict[str, Any] | None:
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
            results[sql] = ExecutionResult.from_dict(cached or pipe.execute(sql, cfg).to_dict())
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
