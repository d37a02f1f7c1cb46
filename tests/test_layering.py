"""The package's layering, enforced on its imports (read with ``ast``, nothing is imported).

    faces (cli, studio) -> graph (route_graph/graph: stages, state, context, chat, build) -> views
    (route_graph/views, prompts, rendering, linking, values, results, repair) -> sql (route_graph/sql,
    sql_bounds, errors)
    models (route_graph/models: spec, weights cache, adapters, engines) and finetune sit beside the
    graph; finetune imports no graph module. model_capabilities (what a provider supports) sits below
    both the graph and models, which use it.

A lower layer never imports a higher one, so each can be read, tested and reused alone: the SQL
layer knows no prompt and no graph setting, and the graph runs any LangChain chat model without
knowing how ours are loaded.
Imports under ``if TYPE_CHECKING:`` are annotations only and are not counted as dependencies,
except where a rule says so.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FACES = ("route_graph.cli", "route_graph.studio")
GRAPH = ("route_graph.graph",)
VIEWS = (
    "route_graph.views", "route_graph.prompts", "route_graph.rendering", "route_graph.linking", "route_graph.values",
    "route_graph.results", "route_graph.repair",
)
SQL_LAYER = ("route_graph.sql", "route_graph.sql_bounds", "route_graph.errors")
MODELS = ("route_graph.models",)
#: What the graph may ask of any chat model (prefill, JSON schema, failures): used by the graph and
#: by models, so it imports neither, nor anything above the SQL layer.
CAPABILITIES = ("route_graph.model_capabilities",)
#: Old module paths kept as re-exports for users' code; nothing in the repository imports them.
COMPAT_SHIMS = ("route_graph.execution", "route_graph.database")
#: (importing module, imported module) pairs allowed against a rule, each with its reason.
EXCEPTIONS = {
    # Database.render_schema, kept for existing callers (benchmarks/backend_speed.py), delegates to
    # the one rendering module inside the method, so importing the SQL layer never loads it.
    ("route_graph.sql.database", "route_graph.rendering"),
}
@dataclass(frozen=True)
class Import:
    """One import statement's target, resolved to a module; ``typing_only`` under TYPE_CHECKING."""

    source: str
    target: str
    line: int
    typing_only: bool


def _lazy_names() -> dict[str, str]:
    """``route_graph.__init__``'s ``_LAZY`` table: ``from route_graph import RouteConfig`` is context."""
    tree = ast.parse((REPO / "route_graph" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_LAZY" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _is_module(name: str) -> bool:
    path = REPO / Path(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(source: str, text: str, lazy: dict[str, str] | None = None) -> Iterator[Import]:
    """Every ``route_graph``/``finetune`` module ``text`` imports, at any depth (functions too)."""
    lazy = _lazy_names() if lazy is None else lazy

    def visit(node: ast.AST, typing_only: bool) -> Iterator[Import]:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from visit(child, True)
            for child in node.orelse:
                yield from visit(child, typing_only)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(source, alias.name, node.lineno, typing_only)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                if _is_module(child):
                    target = child
                elif node.module == "route_graph" and alias.name in lazy:
                    target = lazy[alias.name]
                else:
                    target = node.module
                yield Import(source, target, node.lineno, typing_only)
        for child in ast.iter_child_nodes(node):
            yield from visit(child, typing_only)

    for item in visit(ast.parse(text), False):
        if item.target.split(".")[0] in ("route_graph", "finetune"):
            yield item


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _all_imports() -> list[Import]:
    found: list[Import] = []
    for top in ("route_graph", "finetune", "tests", "benchmarks", "scripts"):
        for path in sorted((REPO / top).rglob("*.py")):
            found.extend(imports_of(_module_name(path), path.read_text(encoding="utf-8")))
    return found


IMPORTS = _all_imports()


def _violations(sources: tuple[str, ...], forbidden: tuple[str, ...], *, typing_too: bool = False) -> list[str]:
    return [
        f"{i.source} (line {i.line}) imports {i.target}"
        for i in IMPORTS
        if _within(i.source, sources)
        and _within(i.target, forbidden)
        and (typing_too or not i.typing_only)
        and (i.source, i.target) not in EXCEPTIONS
    ]


def test_the_sql_layer_imports_only_itself() -> None:
    """route_graph/sql knows no prompt, no rendering, no graph setting and no model."""
    outside = [
        f"{i.source} (line {i.line}) imports {i.target}"
        for i in IMPORTS
        if _within(i.source, ("route_graph.sql",))
        and not _within(i.target, SQL_LAYER)
        and (i.source, i.target) not in EXCEPTIONS
    ]
    assert not outside, "the SQL layer must not depend on the layers above it:\n" + "\n".join(outside)


def test_views_import_neither_the_graph_nor_the_faces() -> None:
    assert not _violations(VIEWS, GRAPH + FACES), _violations(VIEWS, GRAPH + FACES)


def test_the_graph_never_imports_models_or_engines() -> None:
    """The graph takes any LangChain chat model; how ours are loaded is not its business."""
    found = _violations(GRAPH + VIEWS + SQL_LAYER, MODELS, typing_too=True)
    assert not found, "\n".join(found)


def test_model_capabilities_import_only_errors() -> None:
    """The graph degrades a provider's features with it: it must not pull in how our models load."""
    outside = [
        f"{i.source} (line {i.line}) imports {i.target}"
        for i in IMPORTS
        if _within(i.source, CAPABILITIES) and not _within(i.target, ("route_graph.errors",))
    ]
    assert not outside, "\n".join(outside)


def test_the_graph_never_imports_the_faces() -> None:
    assert not _violations(GRAPH, FACES), _violations(GRAPH, FACES)


def test_only_the_faces_import_finetune() -> None:
    """Training sits beside the package: only a face (``route-sql finetune``) may hand over to it."""
    found = [
        f"{i.source} (line {i.line}) imports {i.target}"
        for i in IMPORTS
        if _within(i.source, ("route_graph",)) and not _within(i.source, FACES) and _within(i.target, ("finetune",))
    ]
    assert not found, "\n".join(found)


def test_nothing_imports_the_compat_shims() -> None:
    """route_graph.execution / route_graph.database re-export route_graph.sql for users' code only."""
    found = [
        f"{i.source} (line {i.line}) imports {i.target}"
        for i in IMPORTS
        if _within(i.target, COMPAT_SHIMS) and not _within(i.source, COMPAT_SHIMS) and i.source != "tests.test_layering"
    ]
    assert not found, "import from route_graph.sql instead:\n" + "\n".join(found)


def test_finetune_imports_no_graph_module() -> None:
    """Training renders what the model sees through ``route_graph.views`` (holding a ``ViewConfig``),
    never through the graph's nodes or its ``RouteConfig``."""
    found = _violations(("finetune",), GRAPH, typing_too=True)
    assert not found, "\n".join(found)


def test_loading_finetune_loads_no_graph_module() -> None:
    """Also through a package's ``__init__`` (the direct-import check cannot see those): training
    reads datasets and metrics from ``route_graph.evaluation``, whose runner builds graphs."""
    code = (
        "import sys, pkgutil, importlib, finetune\n"
        "for m in pkgutil.walk_packages(finetune.__path__, 'finetune.'):\n"
        "    if m.name != 'finetune.gpu.train': importlib.import_module(m.name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('route_graph.graph')))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_finetune_data_then_training_then_gpu() -> None:
    """Records are made without training code and trained without the GPU path; the device script
    (finetune/gpu/train.py) runs where neither route_graph nor finetune is installed."""
    forbidden = {
        "finetune.data": ("finetune.training", "finetune.gpu", "finetune.pipeline", "finetune.cli"),
        "finetune.training": ("finetune.gpu", "finetune.pipeline", "finetune.cli"),
        "finetune.gpu.train": ("route_graph", "finetune"),
    }
    found = [
        f"{i.source} (line {i.line}) imports {i.target}"
        for source, targets in forbidden.items()
        for i in IMPORTS
        if _within(i.source, (source,)) and _within(i.target, targets)
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from route_graph import prompts", [("route_graph.prompts", False)]),
        ("from route_graph import RouteConfig", [("route_graph.graph.context", False)]),
        ("def f():\n    from route_graph.sql.schema import Table", [("route_graph.sql.schema", False)]),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import route_graph.models", [("route_graph.models", True)]),
        ("import json\nfrom sqlglot import exp", []),
    ],
)
def test_imports_are_resolved(text: str, expected: list[tuple[str, bool]]) -> None:
    assert [(i.target, i.typing_only) for i in imports_of("demo", text)] == expected


def test_a_violation_is_caught() -> None:
    bad = list(imports_of("route_graph.sql.guard", "from route_graph.views.parsing import parse_sql"))
    assert bad and not _within(bad[0].target, SQL_LAYER)
