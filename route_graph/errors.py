"""One flat hierarchy of errors; every message says what the user can do about it."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "DatabaseError",
    "InputError",
    "ModelError",
    "PromptTooLongError",
    "RouteGraphError",
]


class RouteGraphError(Exception):
    """Base class for every error route-graph raises on purpose."""


class DatabaseError(RouteGraphError):
    """The database cannot be opened or introspected (wrong path, unsupported URL, no tables)."""


class ModelError(RouteGraphError):
    """A model cannot be found, verified or loaded (missing package, corrupt weights, bad spec)."""


class PromptTooLongError(ModelError):
    """One prompt exceeds the model's context: that question fails, the model is fine.

    Evaluation records it per question instead of stopping the run (a model that is missing or
    a server that is down stops it).
    """


class ConfigError(RouteGraphError):
    """A configuration value is invalid."""


class DataError(RouteGraphError):
    """A dataset file or directory is missing or malformed."""


class InputError(RouteGraphError):
    """A graph input or resume value is unusable (no question, an empty one, an unknown review action)."""
