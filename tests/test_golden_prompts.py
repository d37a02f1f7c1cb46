"""Every prompt the model sees is byte-identical to its golden file (tests/golden/).

Trained adapters and stored evaluations depend on each byte of each stage's messages, so a
refactor must leave them all unchanged. A failure names the scenario, the stage's call and the
message that changed, with a diff. To change a prompt on purpose, rewrite the files with
``python scripts/write_golden_prompts.py [SCENARIO ...]`` and say why in the commit (a changed
prompt invalidates the adapters trained on the old one).
"""

from __future__ import annotations

import difflib
import json
from typing import Any

import pytest

from tests.fakes import shared_data_dir
from tests.golden_prompts import GOLDEN_DIR, SCENARIOS, Scenario, render_scenario

REGENERATE = "python scripts/write_golden_prompts.py"


def _where(path: list[Any], root: Any) -> str:
    """A readable location: ``runs[0].calls[2] (schema_link.draft).messages[1] (user)``."""
    parts, node = [], root
    for key in path:
        label = f"[{key}]" if isinstance(key, int) else f".{key}"
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):  # a key only the new content has
            parts.append(label)
            break
        if isinstance(node, dict):
            named = node.get("call") or node.get("role") or node.get("task")
            if named:
                label += f" ({named}{'/' + node['variant'] if 'variant' in node else ''})"
        parts.append(label)
    return "".join(parts).lstrip(".") or "(whole file)"


def _first_difference(expected: Any, actual: Any, path: list[Any]) -> tuple[list[Any], Any, Any] | None:
    if type(expected) is not type(actual):
        return path, expected, actual
    if isinstance(expected, dict):
        for key in [*expected, *(k for k in actual if k not in expected)]:
            if key not in expected or key not in actual:
                return [*path, key], expected.get(key, "<missing>"), actual.get(key, "<missing>")
            found = _first_difference(expected[key], actual[key], [*path, key])
            if found:
                return found
        return None
    if isinstance(expected, list):
        for i, (e, a) in enumerate(zip(expected, actual)):
            found = _first_difference(e, a, [*path, i])
            if found:
                return found
        if len(expected) != len(actual):
            return path, f"{len(expected)} items", f"{len(actual)} items"
        return None
    return None if expected == actual else (path, expected, actual)


def explain(name: str, expected_text: str, actual_text: str) -> str:
    """Which stage's message changed, and how (a unified diff of that message)."""
    expected, actual = json.loads(expected_text), json.loads(actual_text)
    found = _first_difference(expected, actual, [])
    if found is None:  # same content, different bytes (formatting of the file itself)
        where, diff = "(file formatting)", difflib.unified_diff(
            expected_text.splitlines(), actual_text.splitlines(), "golden", "now", lineterm="", n=1
        )
    else:
        path, before, after = found
        where = _where(path, expected)
        diff = difflib.unified_diff(
            str(before).splitlines(), str(after).splitlines(), "golden", "now", lineterm="", n=2
        )
    shown = "\n".join(list(diff)[:60])
    return (
        f"Golden prompt changed: scenario {name!r}, at {where}.\n{shown}\n\n"
        f"Every prompt must stay byte-identical (trained adapters and stored evaluations depend on it). "
        f"If this change is deliberate, rewrite the file with `{REGENERATE} {name}` and say why in the commit."
    )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_prompts_match_their_golden_file(scenario: Scenario) -> None:
    if scenario.spider and shared_data_dir() is None:
        pytest.fail("The Spider scenarios need the shared data: set ROUTE_GRAPH_DATA to the folder holding spider_train/.")
    path = GOLDEN_DIR / f"{scenario.name}.json"
    assert path.exists(), f"no golden file {path}; write it with `{REGENERATE} {scenario.name}`"
    expected = path.read_text(encoding="utf-8")
    actual = render_scenario(scenario)
    if actual != expected:
        pytest.fail(explain(scenario.name, expected, actual), pytrace=False)


def test_every_golden_file_has_a_scenario() -> None:
    names = {s.name for s in SCENARIOS}
    stray = sorted(p.stem for p in GOLDEN_DIR.glob("*.json") if p.stem not in names)
    assert not stray, f"golden files without a scenario (delete them or restore the scenario): {stray}"


def test_a_changed_prompt_is_reported_with_its_stage() -> None:
    before = json.dumps({"runs": [{"calls": [{"call": "generate", "messages": [{"role": "user", "content": "a\nb"}]}]}]})
    after = before.replace("a\\nb", "a\\nc")
    report = explain("demo", before, after)
    assert "runs[0].calls[0] (generate).messages[0] (user).content" in report
    assert "-b" in report and "+c" in report and f"{REGENERATE} demo" in report
