"""The notebooks in notebooks/ run, top to bottom, with the real offline default model.

CI (``slow``) executes every notebook with nbclient in a temporary copy (so the outputs saved in
the repository are never touched by a test run) and fails on the first cell error. A fast test
checks that the saved copies were executed (every code cell has run, no error outputs).

To refresh the saved outputs after editing a notebook (run from the repository root; prints the
time each notebook took)::

    python tests/test_notebooks.py                 # all of them, outputs written in place
    python tests/test_notebooks.py 01_quickstart   # some of them

Notebooks 03 and 04 need the shared Spider data ($ROUTE_GRAPH_DATA, else ../shared/data).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
NEEDS_DATA = {"03_finetune.ipynb", "04_evaluate.ipynb"}
CELL_TIMEOUT_S = int(os.environ.get("ROUTE_GRAPH_NOTEBOOK_CELL_TIMEOUT", "3600"))


def _data_dir() -> Path:
    env = os.environ.get("ROUTE_GRAPH_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


@contextmanager
def python3_kernel(where: Path) -> Iterator[str]:
    """A ``python3`` kernelspec that runs *this* interpreter, first on JUPYTER_PATH for the block.

    A user's or system ``python3`` kernelspec may point at another Python (its argv is often just
    ``python``); executing the notebooks with the interpreter that runs the tests is what we want.
    """
    spec_dir = where / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    # What ``python -m ipykernel_launcher`` does, from a file of ours: the kernel's command line
    # names this suite, not a generic launcher that other tooling on a shared machine may reap.
    launcher = spec_dir / "route_graph_nb.py"
    launcher.write_text("from ipykernel.kernelapp import launch_new_instance\n\nlaunch_new_instance()\n")
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, str(launcher), "-f", "{connection_file}"],
                "display_name": "Python 3 (route-graph tests)",
                "language": "python",
            }
        )
    )
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(where), *([old] if old else [])])
    try:
        yield "python3"
    finally:
        if old is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old


def execute_notebook(path: Path, cwd: Path, kernel_name: str = "python3"):
    """Run every cell of ``path`` with ``cwd`` as the working directory; returns the executed notebook.

    Raises ``nbclient.exceptions.CellExecutionError`` (naming the cell) on the first error.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(cwd)}},
        allow_errors=False,
        record_timing=False,
    )
    client.execute()
    return nb


# --------------------------------------------------------------------------------------- tests


def test_every_notebook_is_listed() -> None:
    names = [p.name for p in NOTEBOOKS]
    assert names == ["01_quickstart.ipynb", "02_graph_and_studio.ipynb", "03_finetune.ipynb", "04_evaluate.ipynb", "05_agent_app.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_saved_notebook_was_executed(path: Path) -> None:
    """The repository's copies carry real outputs: every code cell ran, in order, without errors."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert cells, f"{path.name} has no code cells"
    counts = [c.get("execution_count") for c in cells]
    assert all(isinstance(n, int) for n in counts), f"{path.name}: unexecuted cells (run tests/test_notebooks.py)"
    assert counts == sorted(counts), f"{path.name}: cells were executed out of order"
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: saved outputs contain errors: {[e.get('ename') for e in errors]}"
    assert any(c.get("outputs") for c in cells), f"{path.name}: no outputs saved"


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, tmp_path: Path) -> None:
    """Execute a temporary copy from a notebooks/-like folder outside the checkout (so the
    notebook must find the repository and data itself); any cell error fails the test."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    if path.name in NEEDS_DATA and not (_data_dir() / "spider_train").is_dir():
        pytest.skip(f"{path.name} needs the shared Spider data at {_data_dir()} (set ROUTE_GRAPH_DATA)")
    before = path.read_bytes()
    work = tmp_path / "notebooks"
    work.mkdir()
    copy = work / path.name
    shutil.copy2(path, copy)
    with python3_kernel(tmp_path / "jupyter") as kernel:
        start = time.perf_counter()
        nb = execute_notebook(copy, cwd=work, kernel_name=kernel)
        elapsed = time.perf_counter() - start
    print(f"{path.name}: executed in {elapsed:.0f} s")
    ran = [c for c in nb.cells if c.cell_type == "code"]
    assert all(isinstance(c.get("execution_count"), int) for c in ran)
    assert path.read_bytes() == before, "the repository's saved notebook must not change"


# --------------------------------------------------------------------------------------- refresh


def main(argv: list[str]) -> int:
    """Execute notebooks from the repository root and write their outputs in place."""
    import nbformat

    wanted = [a for a in argv if not a.startswith("-")]
    chosen = [p for p in NOTEBOOKS if not wanted or p.stem in wanted or p.name in wanted]
    if not chosen:
        print(f"no notebook matches {wanted}; have {[p.stem for p in NOTEBOOKS]}", file=sys.stderr)
        return 2
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, python3_kernel(Path(tmp)) as kernel:
        for path in chosen:
            start = time.perf_counter()
            nb = execute_notebook(path, cwd=ROOT, kernel_name=kernel)
            nbformat.write(nb, path)
            print(f"{path.name}: executed in {time.perf_counter() - start:.0f} s, saved", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
