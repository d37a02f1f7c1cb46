"""``route_graph.views``: the settings that decide what the model sees, and the stage composition
the graph and finetune share (its every byte is pinned by tests/test_golden_prompts.py)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from route_graph import RouteConfig
from route_graph.errors import ConfigError
from route_graph.sql.opening import open_database
from route_graph.views import ViewConfig, stage_messages, stage_prefill
from tests.fakes import make_concert_db


def test_view_defaults_are_the_graph_defaults() -> None:
    """A ViewConfig() renders what a default graph shows; every field is a RouteConfig field, or
    a setting of the value_retrieval extra under its former field name."""
    from route_graph.graph.extras import former_values

    assert ViewConfig() == RouteConfig().view()
    route_fields = {**{f.name: f.default for f in fields(RouteConfig)}, **former_values(())}
    for f in fields(ViewConfig):
        assert route_fields[f.name] == f.default, f.name


def test_a_route_config_gives_its_view_fields() -> None:
    view = ViewConfig.of(RouteConfig(link_sample_rows=1, prompt_style="few_shot", noise_correction=False))
    assert (view.link_sample_rows, view.prompt_style) == (1, "few_shot")
    assert ViewConfig.of(view) is view


@pytest.mark.parametrize("bad", [{"link_sample_rows": -1}, {"max_rows": 0}, {"schema_format": "xml"}])
def test_bad_view_settings_are_config_errors(bad: dict) -> None:
    with pytest.raises(ConfigError):
        ViewConfig(**bad)


def test_stages_show_the_schema_they_should(tmp_path: Path) -> None:
    db = open_database(make_concert_db(tmp_path / "concert.sqlite"))
    view = ViewConfig(link_sample_rows=0, generate_sample_rows=0)
    links = {"singer": ["name"]}
    generate = stage_messages("generate", "Who sings?", db, view, links=links)[-1]["content"]
    assert "CREATE TABLE singer" in generate and "CREATE TABLE concert" not in generate
    cw_full = stage_messages("cw", "Who sings?", db, view, links=links)[-1]["content"]
    assert "CREATE TABLE concert" in cw_full  # cw_full_schema (the default)
    cw_linked = stage_messages("cw", "Who sings?", db, ViewConfig(cw_full_schema=False), links=links)[-1]["content"]
    assert "CREATE TABLE concert" not in cw_linked
    assert stage_prefill("cw", view) == "```sql\nSELECT"
    with pytest.raises(ValueError, match="Unknown stage"):
        stage_messages("answer", "Who sings?", db, view)  # type: ignore[arg-type]
