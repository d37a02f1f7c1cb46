"""The schema text every prompt shows, in one of two formats, always within a token budget.

This is the ONE rendering module: the graph's stages and ``finetune`` (training records) call
:func:`stage_schema_text`, so a fine-tuned model sees the text it was trained on.

- ``ddl``: CREATE TABLE statements with keys and a block of sample rows (the ROUTE reference;
  :func:`render_ddl`).
- ``compact``: one line per table, ``name TYPE`` per column with keys marked and a few distinct
  sample values, then the foreign keys; about half the tokens of ``ddl`` on Spider schemas.

The budget is what makes a big schema safe: when the text would exceed
``schema_token_budget`` (estimated tokens; ``views.ViewConfig``), the renderer gives up detail in a fixed
order — sample values first, then the columns of tables the question does not need (keys and
the columns in ``keep`` stay), then whole such tables — and says so in the text. A prompt never
grows past what the model accepts, so one huge database cannot stop an evaluation run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from route_graph.errors import ConfigError, DatabaseError
from route_graph.sql.result import format_value
from route_graph.sql.schema import Schema, Table, quote_identifier

if TYPE_CHECKING:
    from route_graph.linking import RecallAdditions
    from route_graph.sql.database import Database
    from route_graph.views.config import ViewConfig

__all__ = [
    "CHARS_PER_TOKEN",
    "COMPACT_VALUE_CHARS", "SchemaFormat", "estimate_tokens", "recall_first_links", "render_ddl",
    "render_schema_text", "stage_schema_text"]

SchemaFormat = Literal["ddl", "compact"]

# Measured with Qwen2.5's tokenizer on the 20 valid.json schemas (benchmarks/schema_tokens.py):
# 2.2 to 3.5 characters per token (digits and punctuation are a token each); 2.0 keeps the
# estimate from under-counting on every one of them.
CHARS_PER_TOKEN = 2.0
# Sample values in the compact format are cut shorter than in DDL's row blocks: a value there
# only shows what the column holds (its spelling, case, format).
COMPACT_VALUE_CHARS = 30


def estimate_tokens(text: str) -> int:
    """A tokenizer-free upper estimate of the tokens in schema text (see ``CHARS_PER_TOKEN``)."""
    return int(len(text) / CHARS_PER_TOKEN) + 1


def stage_schema_text(db: Database, cfg: ViewConfig, links: Mapping[str, Sequence[str]] | None = None) -> str:
    """The schema text a stage shows the model (fine-tuning renders its records with this too).

    Full schema with ``link_sample_rows`` rows (schema linking, draft SQL, noise correction, and
    generation when there are no links); the schema reduced to ``links`` with
    ``generate_sample_rows`` rows (generation, continuation writing). Both within the budget.
    """
    fmt, budget = cfg.schema_format, cfg.schema_token_budget
    if not links:
        return render_schema_text(
            db, db.schema, fmt=fmt, sample_rows=cfg.link_sample_rows,
            value_chars=cfg.feedback_value_chars, token_budget=budget,
        )
    return render_schema_text(
        db, db.schema.restrict(dict(links)), fmt=fmt, sample_rows=cfg.generate_sample_rows,
        value_chars=cfg.feedback_value_chars, token_budget=budget, keep=links,
    )


def recall_first_links(
    db: Database, cfg: ViewConfig, links: Mapping[str, Sequence[str]], text: str, full_text: str | None = None
) -> tuple[dict[str, list[str]], RecallAdditions | None]:
    """The links generation sees under ``cfg.recall_first_linking`` (``linking.expand_links``):
    kept tables keep all their columns when the full schema (``full_text``, rendered if not given)
    fits ``schema_token_budget``. The graph and fine-tuning both call this, so they agree."""
    from route_graph.linking import expand_links

    if not cfg.recall_first_linking or not links:
        return dict(links), None
    budget = cfg.schema_token_budget
    full = full_text if full_text is not None else stage_schema_text(db, cfg)
    fits = budget <= 0 or estimate_tokens(full) <= budget
    return expand_links(db.schema, dict(links), text, all_columns=fits)


def render_schema_text(
    db: Database,
    schema: Schema,
    *,
    fmt: SchemaFormat = "ddl",
    sample_rows: int = 3,
    value_chars: int = 60,
    token_budget: int = 0,
    keep: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """``schema`` as prompt text in ``fmt``; at most ``token_budget`` estimated tokens (0: no limit).

    ``keep`` names the tables/columns the question needs (schema links): they are the last to go.
    """
    if fmt not in ("ddl", "compact"):
        raise ConfigError(f"Unknown schema_format {fmt!r}: use 'ddl' or 'compact'.")

    def render(s: Schema, rows: int, chars: int) -> str:
        if fmt == "ddl":
            return render_ddl(db, s, sample_rows=rows, value_chars=chars)
        return _render_compact(db, s, rows, chars)

    text = render(schema, sample_rows, value_chars)
    if token_budget <= 0 or estimate_tokens(text) <= token_budget:
        return text
    # 1. fewer sample values, shorter values
    for rows, chars in ((min(sample_rows, 1), min(value_chars, 30)), (0, value_chars)):
        text = render(schema, rows, chars)
        if estimate_tokens(text) <= token_budget:
            return text
    # 2. tables outside ``keep`` shrink to their key columns, 3. then go, last table first
    wanted = {t.lower(): {c.lower() for c in cols} for t, cols in (keep or {}).items()}
    slim = _keys_only(schema, wanted)
    note = "\n-- only key columns shown for the other tables (prompt budget)"
    text = render(slim, 0, value_chars) + note
    dropped: list[str] = []
    tables = list(slim.tables)
    while estimate_tokens(text) > token_budget and tables:
        removable = [t for t in tables if t.name.lower() not in wanted] or tables
        gone = removable[-1]
        tables.remove(gone)
        dropped.append(gone.name)
        text = render(type(schema)(tuple(tables)), 0, value_chars) + note + _omitted(dropped)
    return text


def render_ddl(db: Database, schema: Schema | None = None, *, sample_rows: int = 3, value_chars: int = 60) -> str:
    """``schema`` (all of ``db``'s by default) as CREATE TABLE statements with keys and a block of
    sample rows per table: the ``ddl`` format, the ROUTE reference's."""
    schema = db.schema if schema is None else schema
    return "\n\n".join(_ddl_table(db, t, sample_rows, value_chars) for t in schema.tables)


def _ddl_table(db: Database, table: Table, sample_rows: int, value_chars: int) -> str:
    def q(name: str) -> str:
        return quote_identifier(name, db.dialect)

    lines = [f"  {q(c.name)} {c.type}".rstrip() for c in table.columns]
    pk = [q(c.name) for c in table.columns if c.primary_key]
    if pk:
        lines.append(f"  PRIMARY KEY ({', '.join(pk)})")
    lines += [
        f"  FOREIGN KEY ({q(fk.column)}) REFERENCES {q(fk.ref_table)}({q(fk.ref_column)})"
        for fk in table.foreign_keys
    ]
    text = f"CREATE TABLE {q(table.name)} (\n" + ",\n".join(lines) + "\n);"
    if sample_rows <= 0:
        return text
    try:
        columns, rows = db.sample_rows(table.name, sample_rows)
    except DatabaseError:
        return text  # e.g. a table the schema names but the database cannot read
    position = {c.lower(): i for i, c in enumerate(columns)}
    keep = [position[c.name.lower()] for c in table.columns if c.name.lower() in position]
    if not rows:
        return text + f"\n/*\nTable {table.name} has no rows.\n*/"
    header = "\t".join(columns[i] for i in keep)
    body = "\n".join("\t".join(format_value(r[i], value_chars) for i in keep) for r in rows)
    noun = "example row" if len(rows) == 1 else "example rows"
    return text + f"\n/*\n{len(rows)} {noun} from table {table.name}:\n{header}\n{body}\n*/"


def _omitted(names: Iterable[str]) -> str:
    names = list(names)
    return f"\n-- {len(names)} more table(s) not shown (prompt budget): {', '.join(reversed(names))}"


def _keys_only(schema: Schema, wanted: Mapping[str, set[str]]) -> Schema:
    """Tables not in ``wanted`` keep only key columns; wanted ones keep their linked columns too."""
    out = []
    for t in schema.tables:
        fk_cols = {fk.column.lower() for fk in t.foreign_keys}
        referenced = {
            fk.ref_column.lower() for other in schema.tables for fk in other.foreign_keys if fk.ref_table.lower() == t.name.lower()
        }
        named = wanted.get(t.name.lower(), set())
        keep_all = t.name.lower() in wanted and not named  # a table linked without columns: whole
        cols = tuple(
            c for c in t.columns
            if keep_all or c.primary_key or c.name.lower() in fk_cols | referenced | named
        ) or t.columns[:1]
        out.append(Table(t.name, cols, t.foreign_keys))
    return type(schema)(tuple(out))


def _render_compact(db: Database, schema: Schema, sample_rows: int, value_chars: int) -> str:
    lines = [_compact_table(db, t, sample_rows, value_chars) for t in schema.tables]
    fks = [
        f"{_q(db, t.name)}.{_q(db, fk.column)} = {_q(db, fk.ref_table)}.{_q(db, fk.ref_column)}"
        for t in schema.tables
        for fk in t.foreign_keys
        if schema.table(fk.ref_table) is not None
    ]
    if fks:
        lines.append("Foreign keys: " + ", ".join(fks))
    return "\n".join(lines)


def _q(db: Database, name: str) -> str:
    return quote_identifier(name, db.dialect)


def _compact_table(db: Database, table: Table, sample_rows: int, value_chars: int) -> str:
    values: dict[str, list[str]] = {}
    if sample_rows > 0:
        try:
            columns, rows = db.sample_rows(table.name, max(sample_rows, 3) * 2)
        except DatabaseError:
            columns, rows = [], []
        for i, name in enumerate(columns):
            seen: list[str] = []
            for row in rows:
                if not isinstance(row[i], str) or not row[i].strip():
                    continue  # numbers cost a token per digit and say little; text shows spelling
                shown = "'" + format_value(row[i], min(value_chars, COMPACT_VALUE_CHARS)).replace("'", "''") + "'"
                if shown not in seen:
                    seen.append(shown)
                if len(seen) >= sample_rows:
                    break
            values[name.lower()] = seen
    parts = []
    for c in table.columns:
        text = f"{_q(db, c.name)} {c.type}".rstrip()
        if c.primary_key:
            text += " PK"
        examples = values.get(c.name.lower())
        if examples and not c.primary_key:  # key values (1, 2, 3) tell the model nothing
            text += " e.g. " + ", ".join(examples)
        parts.append(text)
    return f"{_q(db, table.name)}({'; '.join(parts)})"
