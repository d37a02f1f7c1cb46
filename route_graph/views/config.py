"""``ViewConfig``: the settings that decide what the model sees, and nothing else.

Training must render exactly what inference shows, so ``finetune`` holds this small object
instead of the graph's ``RouteConfig``; the graph hands its nodes ``RouteConfig.view()``. Each field
means what the ``RouteConfig`` field of the same name means (its description is there); the
value-retrieval fields are the graph's ``value_retrieval`` extra's settings
(``route_graph.graph.extras.ValueRetrieval``: ``limit``, ``threshold``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from route_graph.errors import ConfigError

__all__ = ["ViewConfig"]


@dataclass(frozen=True)
class ViewConfig:
    """Schema rendering, value retrieval, execution feedback and prompt style of every stage."""

    prompt_style: Literal["zero_shot", "few_shot"] = "zero_shot"
    link_sample_rows: int = 3
    generate_sample_rows: int = 10
    schema_format: Literal["ddl", "compact"] = "ddl"
    schema_token_budget: int = 6000
    recall_first_linking: bool = False
    value_retrieval: bool = False
    value_match_limit: int = 8
    value_match_threshold: float = 85.0
    execution_timeout_s: float = 5.0
    max_rows: int = 1000
    feedback_rows: int = 5
    feedback_value_chars: int = 60
    continuation_prefix: str = "SELECT "
    cw_full_schema: bool = True

    @classmethod
    def of(cls, settings: Any) -> ViewConfig:
        """``settings`` itself, or its fields of the same names (a ``RouteConfig``, say); a field it
        does not have keeps its default (``RouteConfig`` has no value-retrieval fields)."""
        if isinstance(settings, cls):
            return settings
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)})

    def __post_init__(self) -> None:
        if self.prompt_style not in ("zero_shot", "few_shot"):
            raise ConfigError(f"prompt_style must be 'zero_shot' or 'few_shot', got {self.prompt_style!r}.")
        if self.schema_format not in ("ddl", "compact"):
            raise ConfigError(f"schema_format must be 'ddl' or 'compact', got {self.schema_format!r}.")
        for name in ("link_sample_rows", "generate_sample_rows", "schema_token_budget", "value_match_limit", "feedback_rows"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}.")
        if self.max_rows < 1 or self.execution_timeout_s <= 0:
            raise ConfigError(
                f"max_rows must be >= 1 and execution_timeout_s > 0, got {self.max_rows!r} and {self.execution_timeout_s!r}."
            )
