"""Spider- and BIRD-format loading, split paths, seeded sampling, and errors that say what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from route_graph.errors import DataError
from route_graph.evaluation.datasets import load_dataset, sample_indices
from tests.fakes import make_concert_db

FIXTURES = Path(__file__).parent / "fixtures"


def spider_dir(root: Path) -> Path:
    (root / "database" / "concert").mkdir(parents=True)
    make_concert_db(root / "database" / "concert" / "concert.sqlite")
    shutil.copy(FIXTURES / "concert_spider.json", root / "dev.json")
    (root / "tables.json").write_text("[]")
    return root


def test_spider_format(tmp_path: Path) -> None:
    ds = load_dataset(spider_dir(tmp_path), "dev.json")
    assert ds.format == "spider" and ds.total == len(ds.examples) == 7
    first = ds.examples[0]
    assert (first.id, first.db_id, first.gold_sql, first.hint) == (0, "concert", "SELECT count(*) FROM singer", None)
    assert ds.db_path("concert") == (tmp_path / "database/concert/concert.sqlite").resolve()
    assert ds.tables_path == (tmp_path / "tables.json").resolve()
    with pytest.raises(DataError, match="not part of dataset"):
        ds.db_path("nope")


def test_bird_format_with_own_database_folder(tmp_path: Path) -> None:
    (tmp_path / "dev_databases" / "concert").mkdir(parents=True)
    make_concert_db(tmp_path / "dev_databases" / "concert" / "concert.sqlite")
    shutil.copy(FIXTURES / "concert_bird.json", tmp_path / "dev.json")
    ds = load_dataset(tmp_path, "dev.json")
    assert ds.format == "bird"
    first, second = ds.examples
    assert first.hint == "French refers to country = 'France'" and first.difficulty == "simple"
    assert first.gold_sql.startswith("SELECT COUNT(*)")
    assert second.hint is None  # empty evidence is no hint


def test_split_absolute_or_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = spider_dir(tmp_path / "spider")
    assert len(load_dataset(None, root / "dev.json").examples) == 7  # absolute split, no --data
    # an absolute split ignores --data for the split; its databases are found next to it
    assert load_dataset(tmp_path, root / "dev.json").db_path("concert").parent.parent == (root / "database").resolve()
    monkeypatch.chdir(root)
    assert load_dataset(None, "dev.json").split_path == (root / "dev.json").resolve()


def test_seeded_sampling_is_deterministic_and_sorted(tmp_path: Path) -> None:
    root = spider_dir(tmp_path)
    a = [e.id for e in load_dataset(root, "dev.json", limit=3, sample_seed=1).examples]
    b = [e.id for e in load_dataset(root, "dev.json", limit=3, sample_seed=1).examples]
    c = [e.id for e in load_dataset(root, "dev.json", limit=3, sample_seed=2).examples]
    assert a == b == sorted(a) and len(a) == 3 and a != c
    assert sample_indices(5, None, 0) == sample_indices(5, 9, 0) == [0, 1, 2, 3, 4]
    with pytest.raises(DataError):
        sample_indices(5, -1, 0)


def test_missing_split_says_how_to_pass_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="relative to --data or as an absolute path"):
        load_dataset(tmp_path, "dev.json")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nowhere", "dev.json")


def test_missing_database_names_it_and_where_we_looked(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "concert_spider.json", tmp_path / "dev.json")
    (tmp_path / "database").mkdir()
    with pytest.raises(DataError, match=r"concert.*--db-dir"):
        load_dataset(tmp_path, "dev.json")


def test_db_dir_overrides_lookup(tmp_path: Path) -> None:
    (tmp_path / "dbs" / "concert").mkdir(parents=True)
    make_concert_db(tmp_path / "dbs" / "concert" / "concert.sqlite")
    shutil.copy(FIXTURES / "concert_spider.json", tmp_path / "q.json")
    assert load_dataset(tmp_path, "q.json", db_dir=tmp_path / "dbs").db_root == (tmp_path / "dbs").resolve()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"question": "q"}', "expected a JSON list"),
        ('[{"question": "q", "db_id": "concert"}]', "lacks query"),
        ('["just a string"]', "not a question object"),
    ],
)
def test_malformed_split(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path, "bad.json")


def test_fixture_files_are_valid_json() -> None:
    for name in ("concert_spider.json", "concert_bird.json"):
        assert isinstance(json.loads((FIXTURES / name).read_text()), list)
