"""The SQL layer: databases, their schema, and model SQL run read-only. Knows no prompt, no graph.

- ``schema``: tables, columns and keys as plain values; quoting a name in a dialect.
- ``database``: ``Database`` (an engine, its dialect, schema and sample rows);
  ``opening.open_database`` opens one from a path, URL, Engine or ``SQLDatabase``;
  ``introspect`` reads its catalog; ``search_path`` serves ``schema=``.
- ``guard``: is this exactly one read-only query? (before any database sees it)
- ``execute``: ``execute_sql`` runs it read-only, time-limited and row-capped, never raising for
  bad SQL; ``pool`` checks connections out within the deadline, ``fetch`` reads bounded rows.
- ``result``: ``ExecutionResult`` and the feedback text the prompts show.
- ``dialects``: how each database keeps a query read-only and stops it (sqlite, duckdb, postgres,
  mysql, generic); its docstring walks through adding one.

Nothing is imported here, so ``import route_graph.sql.execute`` loads only what execution needs.
"""

__all__: list[str] = []
