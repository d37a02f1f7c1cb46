"""Extras (``route_graph.graph.extras``): options off by default are built in only when asked for.

The default graph has none of their nodes, state keys or work; each extra adds its own; the
settings they had as ``RouteConfig`` fields raise a one-line error that says where they went,
and every way there was to switch one on (``--set``, Studio's configuration, stored runs) still
works. What each extra does to a question is tested in test_self_consistency.py and test_values.py.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from route_graph import ConfigError, RouteConfig, build_route_graph
from route_graph.cli import format_trace
from route_graph.cli import main as cli_main
from route_graph.graph.context import MOVED_TO_EXTRAS, parse_config_overrides
from route_graph.graph.extras import (
    EXTRAS,
    SelfConsistency,
    ValueRetrieval,
    former_values,
    parse_overrides,
    resolve_extras,
    split_fields,
)
from route_graph.graph.stages import CORE_STAGES, STAGES
from tests.fakes import ScriptedChatModel, make_concert_db

FRENCH = "SELECT name FROM singer WHERE country = 'France'"


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    return make_concert_db(tmp_path / "concert.sqlite")


def fence(sql: str) -> str:
    return f"```sql\n{sql}\n```"


def nodes(graph) -> list[str]:
    return [n for n in graph.get_graph().nodes if not n.startswith("__")]


def test_the_default_graph_has_no_extra_nodes_state_or_fields(db_path: Path) -> None:
    graph = build_route_graph(ScriptedChatModel(scripts={}), db_path)
    assert nodes(graph) == [s.node for s in CORE_STAGES]
    assert not {"retrieve_values", "sample_generate", "self_consistency"} & set(nodes(graph))
    assert not {"samples", "value_matches"} & set(graph.channels)
    assert not set(MOVED_TO_EXTRAS) & {f.name for f in fields(RouteConfig)}
    assert not set(MOVED_TO_EXTRAS) & set(graph.get_context_jsonschema()["properties"])


@pytest.mark.parametrize("name", list(EXTRAS))
def test_each_extra_adds_its_nodes_and_state_only(db_path: Path, name: str) -> None:
    extra = EXTRAS[name]()
    graph = build_route_graph(ScriptedChatModel(scripts={}), db_path, extras=[name])
    added = [s.node for s in STAGES if s.extra == name]
    assert added and added == [s.node for s in extra.stages]
    assert sorted(nodes(graph)) == sorted([s.node for s in CORE_STAGES] + added)
    default = build_route_graph(ScriptedChatModel(scripts={}), db_path)
    assert set(graph.channels) - set(default.channels) >= set(extra.state())
    # Its state stays inside the graph: the output is the same.
    assert graph.get_output_jsonschema() == default.get_output_jsonschema()


def test_both_extras_run_together(db_path: Path) -> None:
    llm = ScriptedChatModel(scripts={"sl": ['{"singer": ["name", "country"]}'], "ts": [fence(FRENCH)] * 4})
    graph = build_route_graph(llm, db_path, extras=[SelfConsistency(2), "value_retrieval"])
    out = graph.invoke({"question": "Which singers are from France?"})
    stages = [e["stage"] for e in out["trace"]]
    assert stages == ["retrieve_values", "schema_link", "generate", "self_consistency", "noise_correct", "finalize"]
    assert out["sql"] == FRENCH
    # Every SQL-writing prompt shows the value, the samples' too (4 TS calls: draft, generate, 2 samples).
    assert [task for task, _ in llm.calls].count("ts") == 4
    assert all("-- singer.country: 'France'" in prompt for _, prompt in llm.calls)
    assert out["trace"][-1]["vote"]["samples"] == 2
    assert "  retrieve_values singer.country: 'France'  [" in format_trace(out["trace"])


def test_an_extra_is_a_name_an_object_or_a_comma_list() -> None:
    assert resolve_extras(None) == resolve_extras(()) == ()
    assert resolve_extras(["self_consistency"]) == (SelfConsistency(),)
    # Pipeline order, whatever the order given.
    assert resolve_extras("self_consistency, value_retrieval") == (ValueRetrieval(), SelfConsistency())
    assert resolve_extras([SelfConsistency(3), ValueRetrieval(limit=2)]) == (ValueRetrieval(limit=2), SelfConsistency(3))
    with pytest.raises(ConfigError, match="Unknown extra 'nc_verdcit'; the extras are value_retrieval, self_consistency"):
        resolve_extras(["nc_verdcit"])
    with pytest.raises(ConfigError, match="given twice"):
        resolve_extras(["self_consistency", SelfConsistency(2)])
    with pytest.raises(ConfigError, match="an Extra object"):
        resolve_extras([3])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="threshold"):
        ValueRetrieval(threshold=120)


@pytest.mark.parametrize("name", sorted(MOVED_TO_EXTRAS))
def test_a_moved_field_says_where_it_went_in_one_line(db_path: Path, name: str) -> None:
    extra = MOVED_TO_EXTRAS[name]
    expected = f"RouteConfig.{name} is now a setting of the build-time extra '{extra}': build_route_graph(llm, db, extras=['{extra}'])"
    for attempt in (
        lambda: RouteConfig(**{name: 1}),
        lambda: RouteConfig().override({name: 1}),
        lambda: parse_config_overrides([f"{name}=1"]),
        lambda: build_route_graph(ScriptedChatModel(scripts={}), db_path).invoke({"question": "q"}, context={name: 1}),
    ):
        with pytest.raises(ConfigError) as caught:
            attempt()
        assert str(caught.value).startswith(expected) and "\n" not in str(caught.value)


def test_former_fields_build_the_extras_and_are_recorded_as_before() -> None:
    """``--set`` and stored runs name the extras' settings by their former fields."""
    values, extras = parse_overrides(["nc_verdict=true", "self_consistency=3", "value_retrieval=true", "value_match_limit=4"])
    assert values == {"nc_verdict": True}
    assert extras == (ValueRetrieval(limit=4), SelfConsistency(3))
    assert parse_overrides(["value_retrieval=false", "self_consistency=0"]) == ({}, ())
    with pytest.raises(ConfigError, match="takes a bool"):
        parse_overrides(["value_retrieval=maybe"])
    with pytest.raises(ConfigError, match="SelfConsistency.samples"):
        parse_overrides(["self_consistency=-2"])
    # A run without extras records the values these fields had by default before extras.
    assert former_values(()) == {
        "value_retrieval": False, "value_match_limit": 8, "value_match_threshold": 85.0, "self_consistency": 0,
    }
    recorded = {"nc_verdict": True, **former_values(extras)}
    assert split_fields(recorded) == ({"nc_verdict": True}, extras)


def test_ask_set_self_consistency_builds_the_extra(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    llm = ScriptedChatModel(scripts={"sl": ['{"singer": ["name", "country"]}'], "ts": [fence(FRENCH)] * 4})
    monkeypatch.setattr("route_graph.models.load_chat_model", lambda *args, **kwargs: llm)
    code = cli_main(["ask", "--json", "--db", str(db_path), "--set", "self_consistency=2", "--set", "value_retrieval=true",
                     "Which singers are from France?"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert [e["stage"] for e in out["trace"]][:4] == ["retrieve_values", "schema_link", "generate", "self_consistency"]


def test_studio_takes_extras_from_configurable_or_environment(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from route_graph import studio

    monkeypatch.setattr("route_graph.models.load_chat_model", lambda *args, **kwargs: ScriptedChatModel(scripts={}))
    studio._graph_for.cache_clear()
    try:
        graph = studio._graph_from({"db": str(db_path), "extras": "self_consistency"})
        assert "sample_generate" in nodes(graph) and "retrieve_values" not in nodes(graph)
        monkeypatch.setenv("ROUTE_GRAPH_EXTRAS", "value_retrieval")
        assert "retrieve_values" in nodes(studio._graph_from({"db": str(db_path)}))
        with pytest.raises(ConfigError, match="Unknown extra"):
            studio._graph_from({"db": str(db_path), "extras": ["sampling"]})
    finally:
        studio._graph_for.cache_clear()
