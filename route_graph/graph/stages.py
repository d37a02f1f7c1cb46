"""``STAGES``: every node of the graph named once, with the other names it goes by.

A stage is known by its node id in the compiled graph (also the ``stage`` of its trace entries and
of the answer it produces), by its name in ``--stages`` / ``RouteConfig.with_stages``, by the
``RouteConfig`` switch that turns it on, by its key in ``sql_by_stage`` (the SQL it leaves: a
candidate of the finalize vote and a checkpoint of the evaluation), by the label ``route-sql ask``
shows while it runs and, for the nodes of an extra (``route_graph.graph.extras``), by that extra's
name: such a node is in the graph only when the extra is built in. Stored evaluations, Studio and
LangSmith traces read these names, so they are written here and everything else (the graph, the
CLI, ``RouteConfig``, the evaluation) reads them from here. Imports nothing: the CLI reads it
before anything heavy loads.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CONTINUE_WRITE",
    "CORE_STAGES",
    "FINALIZE",
    "GENERATE",
    "NEW_QUESTION",
    "NOISE_CORRECT",
    "RESCUE",
    "RESPOND",
    "RETRIEVE_VALUES",
    "REVIEW",
    "REWRITE_QUESTION",
    "SAMPLE_GENERATE",
    "SCHEMA_LINK",
    "SELF_CONSISTENCY",
    "STAGES",
    "STAGE_ALIASES",
    "Stage",
]


@dataclass(frozen=True)
class Stage:
    """The names of one node (see the module docstring); ``None`` where it has no such name."""

    node: str
    alias: str | None = None  # in --stages / RouteConfig.with_stages
    switch: str | None = None  # the RouteConfig field that turns it on
    sql_key: str | None = None  # its key in sql_by_stage
    label: str | None = None  # route-sql ask's progress line; None: the node id
    #: Its SQL is a proposal, taken only when it passes (the trace's ``accepted``); the vote counts
    #: it only then.
    accepting: bool = False
    #: The extra (``extras.Extra.name``) that adds this node; None: every graph has it.
    extra: str | None = None


# fmt: off
#                        node              alias     switch                  sql_key           label, accepting
NEW_QUESTION     = Stage("new_question")
REWRITE_QUESTION = Stage("rewrite_question")
RETRIEVE_VALUES  = Stage("retrieve_values", label="retrieving values", extra="value_retrieval")
SCHEMA_LINK      = Stage("schema_link",    "sl",     "schema_linking",       "draft",          "schema linking")
GENERATE         = Stage("generate",       None,     None,                   "generate",       "generating SQL")
SAMPLE_GENERATE  = Stage("sample_generate", extra="self_consistency")
SELF_CONSISTENCY = Stage("self_consistency", extra="self_consistency")
NOISE_CORRECT    = Stage("noise_correct",  "nc",     "noise_correction",     "noise_correct",  "noise correction", True)
CONTINUE_WRITE   = Stage("continue_write", "cw",     "continuation_writing", "continue_write", "continuation writing", True)
RESCUE           = Stage("rescue",         "rescue", "rescue",               "rescue",         "rescuing a failing SQL", True)
FINALIZE         = Stage("finalize",       label="choosing the answer")
REVIEW           = Stage("review")
RESPOND          = Stage("respond")
# fmt: on

#: Every node, in pipeline order.
STAGES: tuple[Stage, ...] = (
    NEW_QUESTION, REWRITE_QUESTION, RETRIEVE_VALUES, SCHEMA_LINK, GENERATE, SAMPLE_GENERATE, SELF_CONSISTENCY,
    NOISE_CORRECT, CONTINUE_WRITE, RESCUE, FINALIZE, REVIEW, RESPOND,
)
#: The nodes of every graph (those of no extra), in pipeline order.
CORE_STAGES: tuple[Stage, ...] = tuple(s for s in STAGES if s.extra is None)
#: The stages ``--stages`` can name, in pipeline order.
STAGE_ALIASES: tuple[str, ...] = tuple(s.alias for s in STAGES if s.alias)
