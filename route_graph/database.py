"""Old home of the database layer, kept so existing imports keep working (user code names it).

The code lives in ``route_graph.sql`` (``database``, ``opening``, ``schema``); import from there.
"""

from route_graph.sql.database import Database
from route_graph.sql.opening import open_database
from route_graph.sql.schema import Column, ForeignKey, Schema, Table, quote_identifier

__all__ = ["Column", "Database", "ForeignKey", "Schema", "Table", "open_database", "quote_identifier"]
