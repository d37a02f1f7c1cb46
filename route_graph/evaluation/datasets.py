"""Spider- and BIRD-format datasets from any path, with deterministic seeded sampling.

Both benchmarks ship a JSON list of questions plus one SQLite file per database. Spider uses
``query`` for the gold SQL; BIRD uses ``SQL``, adds ``evidence`` (our hint) and often
``difficulty``. Each example keeps its index in the file as a stable id, so predictions from a
sampled or interrupted run can always be matched back to the file.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from route_graph.errors import DataError

__all__ = ["Dataset", "DatasetFormat", "Example", "load_dataset", "resolve_split", "sample_indices"]

DatasetFormat = Literal["spider", "bird"]

PathLike = str | os.PathLike[str]

# Where benchmarks keep their databases, relative to the data directory or the split's folder.
_DB_FOLDERS = ("database", "databases", "dev_databases", "train_databases", "test_database", "test_databases")
_TABLES_FILES = ("tables.json", "{stem}_tables.json", "test_tables.json")


@dataclass(frozen=True)
class Example:
    """One question: ``id`` is its index in the split file (stable across sampling and resumes)."""

    id: int
    db_id: str
    question: str
    gold_sql: str
    hint: str | None = None
    difficulty: str | None = None  # BIRD's given label (simple / moderate / challenging)


@dataclass(frozen=True)
class Dataset:
    """Selected examples of one split file, and where each database's SQLite file lies."""

    split_path: Path
    format: DatasetFormat
    examples: tuple[Example, ...]
    db_paths: Mapping[str, Path]
    total: int  # examples in the file before sampling
    tables_path: Path | None = None
    db_root: Path | None = field(default=None)

    @property
    def name(self) -> str:
        return self.split_path.stem

    def db_path(self, db_id: str) -> Path:
        """SQLite file of ``db_id`` (DataError if the dataset has no such database)."""
        try:
            return self.db_paths[db_id]
        except KeyError:
            raise DataError(f"Database {db_id!r} is not part of dataset {self.split_path}.") from None


def resolve_split(data_dir: PathLike | None, split: PathLike) -> Path:
    """``split`` as given if absolute, else relative to ``data_dir`` (or the working directory)."""
    path = Path(split).expanduser()
    if not path.is_absolute() and data_dir is not None:
        path = Path(data_dir).expanduser() / path
    if not path.is_file():
        where = f" (--split {split!s} relative to --data {data_dir!s})" if data_dir is not None else ""
        raise DataError(
            f"Split file {path} not found{where}. Pass --split as a path relative to --data or as an "
            "absolute path to a Spider/BIRD-format JSON list (e.g. --data spider --split dev.json)."
        )
    return path.resolve()


def sample_indices(total: int, limit: int | None, seed: int) -> list[int]:
    """Sorted indices of a seeded sample of ``limit`` of ``total`` items (all when ``limit`` is None)."""
    if limit is not None and limit < 0:
        raise DataError(f"--limit must be >= 0, got {limit}.")
    if limit is None or limit >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), limit))


def _read_records(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); expected a list of question objects.") from exc
    if not isinstance(data, list):
        raise DataError(f"{path} holds a {type(data).__name__}; expected a JSON list of question objects.")
    return data


def _detect_format(records: list[dict[str, Any]]) -> DatasetFormat:
    first = next((r for r in records if isinstance(r, dict)), {})
    return "bird" if ("SQL" in first or "evidence" in first) and "query" not in first else "spider"


def _example(index: int, record: Any, path: Path) -> Example:
    if not isinstance(record, dict):
        raise DataError(f"{path}: item {index} is a {type(record).__name__}, not a question object.")
    gold = record.get("query", record.get("SQL"))
    missing = [k for k, v in (("question", record.get("question")), ("db_id", record.get("db_id"))) if not v]
    if gold is None:
        missing.append("query (Spider) or SQL (BIRD)")
    if missing:
        raise DataError(f"{path}: item {index} lacks {', '.join(missing)}; is this a Spider/BIRD split file?")
    hint = str(record.get("evidence") or "").strip() or None
    difficulty = record.get("difficulty")
    return Example(
        id=index,
        db_id=str(record["db_id"]),
        question=str(record["question"]),
        gold_sql=str(gold),
        hint=hint,
        difficulty=str(difficulty) if difficulty else None,
    )


def _db_roots(data_dir: Path | None, split_path: Path, db_dir: Path | None) -> list[Path]:
    if db_dir is not None:
        return [db_dir]
    bases = [b for b in dict.fromkeys([data_dir, split_path.parent]) if b is not None]
    roots = [base / name for base in bases for name in (*_DB_FOLDERS, f"{split_path.stem}_databases")]
    return [r for r in dict.fromkeys(roots + bases) if r.is_dir()]


def _find_databases(db_ids: Iterable[str], roots: list[Path]) -> tuple[dict[str, Path], list[str]]:
    found: dict[str, Path] = {}
    missing: list[str] = []
    for db_id in db_ids:
        for root in roots:
            candidate = next(
                (p for p in (root / db_id / f"{db_id}.sqlite", root / db_id / f"{db_id}.db") if p.is_file()), None
            )
            if candidate is not None:
                found[db_id] = candidate.resolve()
                break
        else:
            missing.append(db_id)
    return found, missing


def _find_tables(data_dir: Path | None, split_path: Path) -> Path | None:
    for base in dict.fromkeys([data_dir, split_path.parent]):
        if base is None:
            continue
        for pattern in _TABLES_FILES:
            path = base / pattern.format(stem=split_path.stem)
            if path.is_file():
                return path.resolve()
    return None


def load_dataset(
    data_dir: PathLike | None,
    split: PathLike,
    *,
    limit: int | None = None,
    sample_seed: int = 0,
    db_dir: PathLike | None = None,
) -> Dataset:
    """Load a Spider/BIRD split, sample ``limit`` examples with ``sample_seed``, locate the databases.

    Databases are looked up as ``<root>/<db_id>/<db_id>.sqlite`` under ``db_dir`` if given, else
    under ``database/``, ``dev_databases/`` (BIRD) and similar folders of ``data_dir`` and of the
    split's folder. Every selected example's database must exist (DataError names the missing ones).
    """
    data = Path(data_dir).expanduser().resolve() if data_dir is not None else None
    if data is not None and not data.is_dir():
        raise DataError(f"Data directory {data} does not exist; pass --data DIR holding the split and its databases.")
    split_path = resolve_split(data, split)
    records = _read_records(split_path)
    indices = sample_indices(len(records), limit, sample_seed)
    examples = tuple(_example(i, records[i], split_path) for i in indices)
    roots = _db_roots(data, split_path, Path(db_dir).expanduser().resolve() if db_dir is not None else None)
    db_ids = list(dict.fromkeys(e.db_id for e in examples))
    found, missing = _find_databases(db_ids, roots)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        searched = ", ".join(str(r) for r in roots) or "(no database folder found)"
        raise DataError(
            f"No SQLite file for database(s) {shown}. Looked for <root>/<db_id>/<db_id>.sqlite under: "
            f"{searched}. Put the databases in DIR/database/ next to the split, or pass --db-dir."
        )
    return Dataset(
        split_path=split_path,
        format=_detect_format(records),
        examples=examples,
        db_paths=found,
        total=len(records),
        tables_path=_find_tables(data, split_path),
        db_root=roots[0] if roots else None,
    )
