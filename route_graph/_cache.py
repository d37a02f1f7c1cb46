"""route-graph's cache folder and a cross-process lock for what is written into it.

Several layers keep derived files there (the offline model weights, converted LoRA adapters, the
value index of ``route_graph.values``, training checkpoints), so the folder's location is decided
in one place that imports nothing of theirs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
from collections.abc import Iterator

__all__ = ["file_lock", "model_cache_dir"]

log = logging.getLogger(__name__)


def model_cache_dir() -> pathlib.Path:
    """Where converted models live: ``$ROUTE_GRAPH_CACHE``, else the user cache dir.

    Not created here; the functions that write into it create it.
    """
    override = os.environ.get("ROUTE_GRAPH_CACHE")
    if override:
        return pathlib.Path(override).expanduser()
    try:
        import platformdirs
    except (
        ImportError
    ):  # platformdirs is in the `local` extra; fall back to the XDG default
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            pathlib.Path.home(), ".cache"
        )
        return pathlib.Path(base) / "route-graph"
    return pathlib.Path(platformdirs.user_cache_dir("route-graph", appauthor=False))


@contextlib.contextmanager
def file_lock(path: pathlib.Path) -> Iterator[None]:
    """Exclusive lock across processes (fcntl); a no-op where fcntl does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process lock; conversions are still atomic
        yield
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("Waiting for another process to finish preparing %s", path.parent)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
