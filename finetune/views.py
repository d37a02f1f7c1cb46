"""The schema text each MCP stage shows the model, rebuilt exactly as the graph's nodes build it.

Training must see the very renderings inference sees (``route_graph.nodes``): schema linking,
the full-schema draft SQL and noise correction get the full schema with
``RouteConfig.link_sample_rows`` sample rows; generation and continuation writing get
``schema.restrict(links)`` with ``generate_sample_rows`` rows (the full schema when there are no
links); every value is cut at ``feedback_value_chars``. A test compares these texts with the
prompts the graph really sends. With ``RouteConfig.value_retrieval`` the prompts also show the
database values that match the question, as the graph's nodes show them.
"""

from __future__ import annotations

from route_graph.context import RouteConfig
from route_graph.rendering import stage_schema_text
from route_graph.sql.database import Database
from route_graph.values import match_values, render_matches

__all__ = ["full_schema_text", "linked_schema_text", "question_values"]


def full_schema_text(db: Database, cfg: RouteConfig) -> str:
    """Schema text of the SL, draft-TS and NC prompts."""
    return stage_schema_text(db, cfg)


def linked_schema_text(db: Database, cfg: RouteConfig, links: dict[str, list[str]] | None) -> str:
    """Schema text of the generation and CW prompts (reduced to ``links``; full when empty)."""
    return stage_schema_text(db, cfg, links)


def question_values(db: Database, cfg: RouteConfig, question: str, hint: str | None) -> list[str] | None:
    """The value lines the graph shows for this question (``prompts``' ``values=``); None when off."""
    if not cfg.value_retrieval:
        return None
    matches = match_values(db, question, hint, limit=cfg.value_match_limit, threshold=cfg.value_match_threshold)
    return render_matches(matches) or None
