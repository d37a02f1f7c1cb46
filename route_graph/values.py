"""Value retrieval: literals and names in the question matched against the database's text values.

A small model writes ``WHERE country = 'france'`` or ``name = 'Jaques'`` because it never saw the
stored spelling, and picks the wrong column when several could hold a name. Showing it the
values that match the question (``singer.country: 'France'``) fixes both, as value retrievers do
in CHESS/CodeS-style pipelines. The matching is rapidfuzz's (``fuzz.ratio`` on lowercased text),
not hand-rolled.

The index (distinct text values per text column) is built once per database and cached: in
memory per database (file path, else URL), and on disk for SQLite/DuckDB files under
``model_cache_dir()/values/`` as JSON, keyed by a hash of the file's content (files over 64 MiB:
a hash of size + mtime + first and last MiB, and a ``-wal`` file's size and mtime when there is
one). Other databases (PostgreSQL, ...) are cached in memory only.

Build time and memory are bounded (``ValueBounds``): every query goes through the guarded,
read-only ``sql.execute.execute_sql`` with a per-query timeout; per column at most
``max_rows_scanned`` rows are read and ``max_values_per_column`` distinct values kept; values
longer than ``max_value_chars`` are skipped; the whole index holds at most ``max_total_values``
values and stops after ``build_timeout_s`` seconds. A column that times out or fails is skipped
and listed in ``ValueIndex.skipped``; an index cut short says so (``complete`` False) and is cached
as it is, so a huge database costs the build time once, not on every run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlglot
from rapidfuzz import fuzz, process

from route_graph._cache import model_cache_dir
from route_graph.sql.database import Database
from route_graph.sql.execute import execute_sql
from route_graph.sql.schema import Schema, quote_identifier

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_THRESHOLD",
    "ValueBounds",
    "ValueIndex",
    "ValueMatch",
    "build_value_index",
    "candidate_phrases",
    "clear_value_cache",
    "match_values",
    "render_matches",
    "value_index",
]

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 8
DEFAULT_THRESHOLD = 85.0
_FORMAT = 1
_FULL_HASH_BYTES = 64 * 1024 * 1024
_EDGE_BYTES = 1024 * 1024
_MEMORY_INDEXES = 8  # LRU: an evaluation over many databases keeps only the latest ones
_MIN_FUZZY_CHARS = 4  # shorter phrases match exactly or not at all
_TEXT_TYPE = re.compile(r"CHAR|TEXT|CLOB|STRING|VARCHAR|NAME|ENUM|CITEXT", re.IGNORECASE)
_WORD = re.compile(r"[^\W_]+(?:['’.\-&][^\W_]+)*", re.UNICODE)
_QUOTED = re.compile(r"\"([^\"]{1,200})\"|“([^”]{1,200})”|(?<!\w)'([^']{1,200})'(?!\w)|‘([^’]{1,200})’")
_NUMBER = re.compile(r"^[\d.,]+$")

# Function words and question/SQL vocabulary: never a value on their own, nor at an n-gram's edge.
_STOPWORDS = frozenset(
    """a an the of in on at to for from by with without about into onto over under between among
    and or not no nor but if then than as is are was were be been being do does did done has have
    had having will would shall should can could may might must this that these those there here
    what which who whom whose when where why how all any each every some many much more most
    less least few fewer other others such only own same so too very just also both either
    neither i me my we our you your he him his she her it its they them their one ones s t
    list show give find tell return display name names number numbers count total sum average avg
    mean max maximum min minimum highest lowest largest smallest biggest greatest top bottom first
    last order ordered sort sorted ascending descending asc desc group grouped per distinct
    different unique select where join table tables column columns row rows record records value
    values id ids database data query sql result results like equal equals greater larger smaller
    fewer older younger between before after during since until year years date dates time times
    all each both whether please ever never yet""".split()  # noqa: SIM905 - a word list reads better
)


@dataclass(frozen=True)
class ValueBounds:
    """Limits of one index build (see the module docstring); part of the disk-cache key."""

    max_values_per_column: int = 2000
    max_value_chars: int = 80
    max_total_values: int = 200_000
    max_rows_scanned: int = 100_000
    query_timeout_s: float = 2.0
    build_timeout_s: float = 60.0


@dataclass(frozen=True)
class ValueMatch:
    """One database value that matches a phrase of the question (score 100 = exact, case aside)."""

    table: str
    column: str
    value: str
    score: float
    phrase: str = ""

    def line(self) -> str:
        """``table.column: 'value'``, the value quoted as a SQL string literal."""
        return f"{self.table}.{self.column}: '{self.value.replace(chr(39), chr(39) * 2)}'"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (graph state and trace)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValueMatch:
        """Inverse of ``to_dict``."""
        return cls(str(d["table"]), str(d["column"]), str(d["value"]), float(d.get("score", 0.0)), str(d.get("phrase", "")))


@dataclass
class ValueIndex:
    """Distinct text values per ``(table, column)``, with a case-insensitive lookup for matching."""

    columns: list[tuple[str, str, list[str]]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    complete: bool = True
    bounds: ValueBounds = field(default_factory=ValueBounds)

    def __post_init__(self) -> None:
        self._by_lower: dict[str, list[tuple[str, str, str]]] = {}
        for table, column, values in self.columns:
            for value in values:
                self._by_lower.setdefault(value.lower(), []).append((table, column, value))
        self._choices = list(self._by_lower)

    @property
    def size(self) -> int:
        """Number of values held."""
        return sum(len(values) for _, _, values in self.columns)

    def to_json(self) -> dict[str, Any]:
        """The disk-cache form."""
        return {
            "format": _FORMAT,
            "bounds": asdict(self.bounds),
            "complete": self.complete,
            "skipped": self.skipped,
            "columns": [{"table": t, "column": c, "values": v} for t, c, v in self.columns],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ValueIndex:
        """Inverse of ``to_json``; ``ValueError`` for another format."""
        if data.get("format") != _FORMAT:
            raise ValueError(f"value index format {data.get('format')!r}, expected {_FORMAT}")
        return cls(
            columns=[(c["table"], c["column"], list(c["values"])) for c in data["columns"]],
            skipped=list(data.get("skipped", [])),
            complete=bool(data.get("complete", True)),
            bounds=ValueBounds(**data.get("bounds", {})),
        )

    def match(
        self,
        phrases: Sequence[str],
        *,
        limit: int = DEFAULT_LIMIT,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> list[ValueMatch]:
        """The best ``limit`` values for ``phrases``: exact (case-insensitive) matches first, then
        rapidfuzz ``fuzz.ratio`` >= ``threshold`` on lowercased text; ties keep phrase order."""
        if limit <= 0 or not self._choices:
            return []
        found: dict[tuple[str, str, str], ValueMatch] = {}
        ranked: list[tuple[float, int, ValueMatch]] = []
        for rank, phrase in enumerate(phrases):
            key = phrase.lower()
            hits: list[tuple[str, float]] = [(key, 100.0)] if key in self._by_lower else []
            if len(key) >= _MIN_FUZZY_CHARS:
                hits += [
                    (choice, float(score))
                    for choice, score, _ in process.extract(
                        key, self._choices, scorer=fuzz.ratio, processor=None,
                        score_cutoff=threshold, limit=limit,
                    )
                    if choice != key
                ]
            for choice, score in hits:
                for table, column, value in self._by_lower[choice]:
                    if (table, column, value) not in found:
                        match = ValueMatch(table, column, value, round(score, 1), phrase)
                        found[(table, column, value)] = match
                        ranked.append((-score, rank, match))
        ranked.sort(key=lambda item: (item[0], item[1]))
        return [match for _, _, match in ranked[:limit]]


# ------------------------------------------------------------------------------------ building
def _text_columns(schema: Schema, dialect: str) -> Iterable[tuple[str, str]]:
    for table in schema.tables:
        for column in table.columns:
            declared = (column.type or "").strip()
            # SQLite stores text in untyped columns too; non-text values are dropped when read.
            if _TEXT_TYPE.search(declared) or (not declared and dialect == "sqlite"):
                yield table.name, column.name


def _values_sql(table: str, column: str, bounds: ValueBounds, dialect: str) -> str:
    q = lambda name: quote_identifier(name, "sqlite")
    sql = (
        f"SELECT DISTINCT v FROM (SELECT {q(column)} AS v FROM {q(table)} LIMIT {int(bounds.max_rows_scanned)}) AS s "
        f"WHERE v IS NOT NULL AND LENGTH(v) BETWEEN 1 AND {int(bounds.max_value_chars)} "
        f"LIMIT {int(bounds.max_values_per_column)}"
    )
    return sql if dialect == "sqlite" else sqlglot.transpile(sql, read="sqlite", write=dialect)[0]


def build_value_index(db: Database, bounds: ValueBounds | None = None) -> ValueIndex:
    """Read the distinct text values of every text column of ``db`` within ``bounds`` (uncached).

    Queries run read-only through ``execute_sql``; a failing or timed-out column is skipped and
    listed in ``skipped``. Raises only what reading the schema raises (``DatabaseError``).
    """
    bounds = bounds or ValueBounds()
    deadline = time.monotonic() + bounds.build_timeout_s
    index_columns: list[tuple[str, str, list[str]]] = []
    skipped: list[dict[str, str]] = []
    total, complete = 0, True
    for table, column in _text_columns(db.schema, db.dialect):
        left = deadline - time.monotonic()
        if total >= bounds.max_total_values or left <= 0:
            complete = False
            skipped.append({"table": table, "column": column, "error": "index bound reached"})
            continue
        result = execute_sql(
            db, _values_sql(table, column, bounds, db.dialect),
            timeout_s=min(bounds.query_timeout_s, left), max_rows=bounds.max_values_per_column,
        )
        if not result.ok:
            complete = False
            skipped.append({"table": table, "column": column, "error": result.error or "failed"})
            continue
        seen: set[str] = set()
        values: list[str] = []
        for (value,) in result.rows:
            if isinstance(value, str) and value.strip() and len(value) <= bounds.max_value_chars and value not in seen:
                seen.add(value)
                values.append(value)
        values = values[: bounds.max_total_values - total]
        total += len(values)
        if values:
            index_columns.append((table, column, values))
    return ValueIndex(columns=index_columns, skipped=skipped, complete=complete, bounds=bounds)


# ------------------------------------------------------------------------------------ caching
_lock = threading.Lock()
_key_locks: dict[Any, threading.Lock] = {}
_memory: OrderedDict[Any, ValueIndex] = OrderedDict()
_by_engine: weakref.WeakKeyDictionary[Any, dict[ValueBounds, ValueIndex]] = weakref.WeakKeyDictionary()
_fingerprints: dict[tuple[str, int, int, int, int], str] = {}


def clear_value_cache() -> None:
    """Forget every in-memory index (the disk cache stays)."""
    with _lock:
        _memory.clear()
        _by_engine.clear()
        _fingerprints.clear()


def _database_file(db: Database) -> Path | None:
    """The SQLite or DuckDB file behind ``db``; None for in-memory and server databases."""
    engine = db.engine
    name = engine.dialect.name
    if name not in ("sqlite", "duckdb"):
        return None
    database = engine.url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database)
        return path.resolve() if path.is_file() else None
    if name != "sqlite":
        return None
    # Our read-only SQLite engines connect through a creator ("sqlite://"): ask the connection.
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("PRAGMA database_list").fetchall()
    files = [row[2] for row in rows if row[1] == "main" and row[2]]
    return Path(files[0]).resolve() if files else None


def _stat_key(path: Path) -> tuple[str, int, int, int, int]:
    st = path.stat()
    wal = Path(f"{path}-wal")
    wal_st = wal.stat() if wal.exists() else None
    return (str(path), st.st_size, st.st_mtime_ns, wal_st.st_size if wal_st else -1, wal_st.st_mtime_ns if wal_st else -1)


def _fingerprint(path: Path, stat_key: tuple[str, int, int, int, int]) -> str:
    """sha256 of the file's content (over 64 MiB: of size, mtime and its first and last MiB)."""
    with _lock:
        known = _fingerprints.get(stat_key)
    if known is not None:
        return known
    _, size, mtime_ns, wal_size, wal_mtime = stat_key
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if size <= _FULL_HASH_BYTES:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        else:
            digest.update(f"{size}:{mtime_ns}".encode())
            digest.update(handle.read(_EDGE_BYTES))
            handle.seek(max(0, size - _EDGE_BYTES))
            digest.update(handle.read(_EDGE_BYTES))
    if wal_size >= 0:
        digest.update(f"wal:{wal_size}:{wal_mtime}".encode())
    value = digest.hexdigest()
    with _lock:
        _fingerprints[stat_key] = value
    return value


def _cache_file(fingerprint: str, bounds: ValueBounds) -> Path:
    bounds_key = hashlib.sha256(json.dumps(asdict(bounds), sort_keys=True).encode()).hexdigest()[:12]
    return model_cache_dir() / "values" / f"{fingerprint[:32]}-{bounds_key}-v{_FORMAT}.json"


def _read_disk(path: Path) -> ValueIndex | None:
    try:
        return ValueIndex.from_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("Ignoring the unreadable value index %s: %s", path, exc)
        return None


def _write_disk(path: Path, index: ValueIndex) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".values-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(index.to_json(), handle, ensure_ascii=False)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache: the index stays in memory
        log.warning("Cannot write the value index %s: %s", path, exc)


def value_index(db: Database, bounds: ValueBounds | None = None) -> ValueIndex:
    """The value index of ``db``, built at most once per database content (see the module docstring).

    Raises what building raises (``DatabaseError`` for an unreadable schema); callers in the
    graph turn that into "no matches".
    """
    bounds = bounds or ValueBounds()
    path = _database_file(db)
    url = db.engine.url
    if path is not None:
        key: Any = ("file", _stat_key(path), bounds)
    elif url.database and url.database != ":memory:" and url.get_backend_name() not in ("sqlite", "duckdb"):
        key = ("url", url.render_as_string(hide_password=True), bounds)
    else:  # an in-memory engine: cached for as long as the engine lives
        with _lock:
            cached = _by_engine.get(db.engine, {}).get(bounds)
        if cached is None:
            cached = build_value_index(db, bounds)
            with _lock:
                _by_engine.setdefault(db.engine, {})[bounds] = cached
        return cached
    with _lock:
        if key in _memory:
            _memory.move_to_end(key)
            return _memory[key]
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:  # one build per database at a time; the others wait for it
        with _lock:
            if key in _memory:
                return _memory[key]
        disk = _cache_file(_fingerprint(path, key[1]), bounds) if path is not None else None
        index = _read_disk(disk) if disk is not None else None
        if index is None:
            index = build_value_index(db, bounds)
            if disk is not None:
                _write_disk(disk, index)
        with _lock:
            _memory[key] = index
            while len(_memory) > _MEMORY_INDEXES:
                _memory.popitem(last=False)
            _key_locks.pop(key, None)
    return index


# ------------------------------------------------------------------------------------ matching
def _schema_words(schema: Schema | None) -> set[str]:
    words: set[str] = set()
    for table in schema.tables if schema is not None else ():
        for name in [table.name, *(c.name for c in table.columns)]:
            lowered = name.lower()
            words.add(lowered)
            words.update(w for w in re.split(r"[\W_]+", lowered) if w)
            words.update(w + "s" for w in re.split(r"[\W_]+", lowered) if w)
    return words


def candidate_phrases(question: str, hint: str | None = None, schema: Schema | None = None) -> list[str]:
    """Phrases of the question (then the hint) that may name a stored value, most specific first.

    Quoted strings, then word n-grams of 3, 2 and 1 words that neither start nor end with a
    stopword, a question/SQL word, a schema name or a number, and are not made of those alone.
    """
    skip = _STOPWORDS | _schema_words(schema)
    phrases: list[str] = []
    seen: set[str] = set()

    def add(phrase: str) -> None:
        phrase = phrase.strip()
        if phrase and phrase.lower() not in seen:
            seen.add(phrase.lower())
            phrases.append(phrase)

    texts = [t for t in (question, hint) if t]
    for text in texts:
        for groups in _QUOTED.findall(text):
            add(next(g for g in groups if g))
    grams: list[tuple[int, str]] = []
    for text in texts:
        words = _WORD.findall(text)
        edge_ok = [w.lower() not in skip and not _NUMBER.match(w) for w in words]
        for n in (3, 2, 1):
            for i in range(len(words) - n + 1):
                if edge_ok[i] and edge_ok[i + n - 1]:
                    grams.append((n, " ".join(words[i : i + n])))
    for _, gram in sorted(grams, key=lambda item: -item[0]):
        add(gram)
    return phrases


def match_values(
    db: Database,
    question: str,
    hint: str | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    threshold: float = DEFAULT_THRESHOLD,
    bounds: ValueBounds | None = None,
) -> list[ValueMatch]:
    """Values of ``db`` that match phrases of the question or hint, best first (at most ``limit``)."""
    index = value_index(db, bounds)
    return index.match(candidate_phrases(question, hint, db.schema), limit=limit, threshold=threshold)


def render_matches(matches: Iterable[ValueMatch | dict[str, Any]]) -> list[str]:
    """Prompt lines ``table.column: 'value'`` (dicts from the graph state accepted)."""
    return [(m if isinstance(m, ValueMatch) else ValueMatch.from_dict(m)).line() for m in matches]
