"""benchmarks/nc_verdict_check.py: verdicts on a stored run's generate SQL, scored fixed / broken (fake model)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from route_graph import prompts
from tests.fakes import ScriptedChatModel, make_concert_db

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("nc_verdict_check", REPO / "benchmarks" / "nc_verdict_check.py")
nc_verdict_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nc_verdict_check)  # type: ignore[union-attr]

GOLD_A = "SELECT count(*) FROM singer"
GOLD_B = "SELECT name FROM stadium ORDER BY capacity DESC LIMIT 1"


def test_verdicts_are_scored_as_the_graph_would_take_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "spider"
    make_concert_db((data / "database" / "concert").mkdir(parents=True) or data / "database" / "concert" / "concert.sqlite")
    pairs = [
        ("How many singers are there?", GOLD_A),
        ("Which stadium is the largest?", GOLD_B),
        ("How many concerts?", "SELECT count(*) FROM concert"),
    ]
    (data / "valid.json").write_text(json.dumps([{"question": q, "query": s, "db_id": "concert"} for q, s in pairs]))
    run = tmp_path / "run"
    run.mkdir()
    generated = [GOLD_A, "SELECT name FROM stadium ORDER BY capacity ASC LIMIT 1", "SELECT count(*) FROM no_such_table"]
    (run / "predictions.jsonl").write_text("".join(
        json.dumps({"id": i, "db_id": "concert", "question": q, "hint": None, "gold_sql": s, "stage_sql": {"generate": g}}) + "\n"
        for i, ((q, s), g) in enumerate(zip(pairs, generated))
    ))
    # right SQL judged wrong with an executing wrong fix -> broken; wrong SQL judged wrong with the gold -> fixed
    fake = ScriptedChatModel(scripts={"nc": [
        prompts.nc_completion(False, "SELECT count(*) FROM concert"), prompts.nc_completion(False, GOLD_B),
    ]})
    monkeypatch.setattr("route_graph.load_chat_model", lambda spec: fake)
    out = tmp_path / "out"
    argv = ["--run", str(run), "--model", "fake", "--out", str(out), "--data", str(data)]
    assert nc_verdict_check.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcomes"] == {"broken": 1, "fixed": 1, "not judged (nc_repair's case)": 1}
    assert summary["verdicts_on_right_sql"] == {"incorrect": 1} and summary["net_ex_points"] == 0.0
    assert [task for task, _ in fake.calls] == ["nc", "nc"] and GOLD_A in fake.calls[0][1]
    # resumable: a second run asks the model nothing
    assert nc_verdict_check.main(argv) == 0 and len(fake.calls) == 2
