"""benchmarks/link_noise.py: unneeded tables in the generate prompt and over-joins, from stored runs and records."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from finetune.data.records import Record, write_jsonl

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("link_noise", REPO / "benchmarks" / "link_noise.py")
link_noise = importlib.util.module_from_spec(spec)
spec.loader.exec_module(link_noise)  # type: ignore[union-attr]


def _row(i: int, links: list[str], gold: str, generate: str) -> dict:
    return {"id": i, "links": {t: [] for t in links}, "gold_sql": gold, "stage_sql": {"generate": generate}}


def test_sql_tables_reads_tables_not_ctes_and_flags_unparseable() -> None:
    assert link_noise.sql_tables("SELECT T1.a FROM Singer AS T1 JOIN concert AS T2 ON T1.id = T2.id") == {"singer", "concert"}
    assert link_noise.sql_tables("WITH x AS (SELECT * FROM stadium) SELECT * FROM x") == {"stadium"}
    assert link_noise.sql_tables("SELECT FROM WHERE (") is None


def test_run_noise_counts_unneeded_tables_and_over_joins(tmp_path: Path) -> None:
    rows = [
        _row(1, ["singer"], "SELECT count(*) FROM singer", "SELECT count(*) FROM singer"),  # 0 unneeded
        _row(2, ["singer", "concert"], "SELECT name FROM singer", "SELECT name FROM singer"),  # 1, no over-join
        _row(3, ["singer", "concert", "stadium"], "SELECT name FROM singer",
             "SELECT singer.name FROM singer JOIN concert ON singer.id = concert.id"),  # 2, over-join
        _row(4, ["concert"], "SELECT name FROM singer", "SELECT name FROM concert"),  # gold table missing
    ]
    (tmp_path / "mcp").mkdir()
    (tmp_path / "mcp" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = link_noise.run_noise(tmp_path)
    assert result["measured"] == 4
    assert result["share"] == {"0": 0.25, "1": 0.5, "2": 0.25, "3+": 0.0}  # row 4: concert is unneeded
    assert (result["with_unneeded"], result["over_joins"], result["missing"]) == (3, 2, 1)
    assert "2 of 3 (67%)" in link_noise.report([result], [])


def test_records_noise_reads_the_linked_ts_prompts(tmp_path: Path) -> None:
    def ts(variant: str, tables: list[str], sql: str) -> Record:
        schema = "\n".join(f"CREATE TABLE {t} (\n  id INTEGER\n);" for t in tables)
        return Record(task="ts", db_id="concert", example_id=0, variant=variant,
                      prompt=[{"role": "user", "content": f"Database schema:\n{schema}\n\nQuestion: q"}],
                      completion=[{"role": "assistant", "content": f"```sql\n{sql}\n```"}])

    path = tmp_path / "records.jsonl"
    write_jsonl([
        ts("linked_schema", ["singer"], "SELECT count(*) FROM singer"),
        ts("linked_schema", ["singer", "singer_in_concert", "stadium", "concert"], "SELECT count(*) FROM singer"),
        ts("full_schema", ["singer", "stadium"], "SELECT count(*) FROM singer"),  # not the linked view: ignored
    ], path)
    result = link_noise.records_noise(path)
    assert result["measured"] == 2 and result["share"] == {"0": 0.5, "1": 0.0, "2": 0.0, "3+": 0.5}
