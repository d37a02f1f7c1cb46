"""``route-sql ask`` with a scripted model: database options and ``--set`` reach the graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from route_graph.cli import main as cli_main
from tests.fakes import ScriptedChatModel, make_concert_db

FRENCH = "SELECT name FROM singer WHERE country = 'France'"


def test_ask_passes_include_tables_and_set_to_the_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    llm = ScriptedChatModel(
        scripts={"sl": ['{"singer": ["name", "country"]}'], "ts": [f"```sql\n{FRENCH}\n```"] * 2}
    )  # no "nc" line: --set nc_verdict=false means no verdict is asked of SQL that returns rows
    monkeypatch.setattr("route_graph.models.load_chat_model", lambda *args, **kwargs: llm)
    db = make_concert_db(tmp_path / "concert.sqlite")
    code = cli_main(["ask", "--json", "--db", str(db), "--include-tables", "singer,concert",
                     "--set", "nc_verdict=false", "Which singers are from France?"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["sql"] == FRENCH and sorted(r[0] for r in out["result"]["rows"]) == ["Edith", "Jacques"]
    first_prompt = llm.calls[0][1]
    assert "CREATE TABLE singer" in first_prompt and "CREATE TABLE concert" in first_prompt
    assert "CREATE TABLE stadium" not in first_prompt  # not among --include-tables
    assert "nc" not in llm.tasks()


def test_ask_rejects_an_unknown_set_field(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("route_graph.models.load_chat_model", lambda *args, **kwargs: pytest.fail("no model needed"))
    code = cli_main(["ask", "--set", "no_such_field=1", "How many?"])
    assert code != 0
    assert "no_such_field" in capsys.readouterr().err


def test_studio_takes_include_tables_from_configurable_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from route_graph import graph as graph_module
    from route_graph import studio

    monkeypatch.setattr("route_graph.models.load_chat_model", lambda *args, **kwargs: ScriptedChatModel(scripts={}))
    seen: list[dict] = []

    def build(llm, db, config=None, **kwargs):
        seen.append(kwargs)
        return graph_module.build_route_graph(llm, db, config, **kwargs)

    monkeypatch.setattr(studio, "build_route_graph", build)
    db = str(make_concert_db(tmp_path / "concert.sqlite"))
    studio._graph_for.cache_clear()
    studio._graph_from({"db": db, "include_tables": "singer, concert"})
    monkeypatch.setenv("ROUTE_GRAPH_INCLUDE_TABLES", "stadium")
    studio._graph_from({"db": db})
    assert seen == [
        {"schema": None, "include_tables": ["singer", "concert"], "extras": ()},
        {"schema": None, "include_tables": ["stadium"], "extras": ()},
    ]
    with pytest.raises(Exception, match="nowhere"):  # an unknown table is named in the error
        studio._graph_from({"db": db, "include_tables": ["nowhere"]})
    studio._graph_for.cache_clear()


def test_ask_trace_shows_a_skipped_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    llm = ScriptedChatModel(scripts={"sl": ['{"singer": ["name", "country"]}'], "ts": [f"```sql\n{FRENCH}\n```"] * 2})
    monkeypatch.setattr("route_graph.models.load_chat_model", lambda *args, **kwargs: llm)
    db = make_concert_db(tmp_path / "concert.sqlite")
    assert cli_main(["ask", "--db", str(db), "Which singers are from France?"]) == 0
    out = capsys.readouterr()
    assert "noise_correct   skipped (the SQL returns rows; nc_verdict is off)" in out.out + out.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--db", "missing.sqlite"], "missing.sqlite"),
        (["--model", "no-such-model-spec"], "Unknown model spec"),
        (["--include-tables", "no_such_table"], "no_such_table"),
        (["--set", "max_question_chars=5"], "max_question_chars"),
    ],
)
def test_ask_checks_every_input_before_loading_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """A wrong path, spec, table or an over-long question fails with one line, and no model is loaded."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("route_graph.models.load_chat_model", lambda *a, **k: pytest.fail("no model may load"))
    db = make_concert_db(tmp_path / "concert.sqlite")
    argv = ["ask", "--db", str(db), *args, "How many singers are there?"]
    code = cli_main(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("route-sql: error:"), err
    assert len(err.strip().splitlines()) == 1


def test_ask_ignore_tables_hides_them_from_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    llm = ScriptedChatModel(scripts={"ts": [f"```sql\n{FRENCH}\n```"]})
    monkeypatch.setattr("route_graph.models.load_chat_model", lambda *args, **kwargs: llm)
    db = make_concert_db(tmp_path / "concert.sqlite")
    assert cli_main(["ask", "--json", "--db", str(db), "--stages", "", "--ignore-tables", "stadium,concert", "Who?"]) == 0
    prompt = llm.calls[0][1]
    assert "CREATE TABLE singer" in prompt and "stadium" not in prompt and "CREATE TABLE concert " not in prompt


def test_version_and_exit_codes_are_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as version:
        cli_main(["--version"])
    assert version.value.code == 0 and capsys.readouterr().out.startswith("route-sql ")
    with pytest.raises(SystemExit):
        cli_main(["ask", "--help"])
    help_text = capsys.readouterr().out
    assert "exit codes:" in help_text and "130" in help_text and "--ignore-tables" in help_text
