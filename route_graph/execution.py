"""Old home of the executor, kept so existing imports keep working (README and user code name it).

The code lives in ``route_graph.sql`` (``execute``, ``guard``, ``result``); import from there.
"""

from route_graph.sql.execute import SqlTarget, execute_sql
from route_graph.sql.guard import check_read_only, is_denied_function
from route_graph.sql.result import (
    ErrorKind,
    ExecutionResult,
    format_value,
    summarize_result,
)

__all__ = [
    "ErrorKind", "ExecutionResult", "SqlTarget", "check_read_only", "execute_sql", "format_value",
    "is_denied_function", "summarize_result",
]
