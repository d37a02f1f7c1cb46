"""The schema text each MCP stage shows the model, rebuilt exactly as the graph's nodes build it.

Training must see the very renderings inference sees (``route_graph.nodes``): schema linking,
the full-schema draft SQL and noise correction get the full schema with
``RouteConfig.link_sample_rows`` sample rows; generation and continuation writing get
``schema.restrict(links)`` with ``generate_sample_rows`` rows (the full schema when there are no
links); every value is cut at ``feedback_value_chars``. A test compares these texts with the
prompts the graph really sends.
"""

from __future__ import annotations

from route_graph.context import RouteConfig
from route_graph.database import Database
from route_graph.rendering import stage_schema_text

__all__ = ["full_schema_text", "linked_schema_text"]


def full_schema_text(db: Database, cfg: RouteConfig) -> str:
    """Schema text of the SL, draft-TS and NC prompts."""
    return stage_schema_text(db, cfg)


def linked_schema_text(db: Database, cfg: RouteConfig, links: dict[str, list[str]] | None) -> str:
    """Schema text of the generation and CW prompts (reduced to ``links``; full when empty)."""
    return stage_schema_text(db, cfg, links)
