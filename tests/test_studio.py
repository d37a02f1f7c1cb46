"""LangGraph Studio: ``langgraph dev`` serves the graph from langgraph.json, and its API works.

A module fixture starts ``langgraph dev`` (langgraph-cli[inmem], the ``studio`` extra) from the
repository root on a free loopback port, exactly as a user would (no ``--allow-blocking``), with
the demo database and the offline default model, and always stops it again (its process group).
Nothing reaches the internet: the CLI's analytics, the server's version check and LangSmith
tracing are switched off, and no browser is opened. The tests then talk to it the way Studio
does, through its HTTP API (with ``langgraph-sdk``):

- the assistant's schemas expose ``question``/``hint``/``messages`` as input and every
  ``RouteConfig`` field, with its description, as the context (Studio's configuration panel);
- one question, streamed with ``stream_mode="updates"``, yields one update per node
  (``new_question``, ``schema_link``, ``generate``, ..., ``finalize``, ``respond``), honours a
  context override, and leaves ``sql``, its ``result`` and the chat reply in the thread's state;
- three questions in one thread (a second server, serving ``tests/studio_fake_graph.py`` with a
  fake model keyed by question, so it needs no real model and is not ``slow``): after each run the
  thread holds that question's SQL, result and trace only, even when its SQL fails, and the
  messages of every question so far.

The real-model tests are ``slow``; ``pytest tests/test_studio.py -m "not slow"`` runs the fake one.

Environment: ``ROUTE_GRAPH_SKIP_STUDIO=1`` skips the module; ``ROUTE_GRAPH_STUDIO_TIMEOUT``
seconds to wait for the server (default 300); ``ROUTE_GRAPH_STUDIO_RUN_TIMEOUT`` for the run
(default 1800: one question is 3-6 model calls, seconds each on a quiet CPU, much more under load).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from route_graph import RouteConfig
from route_graph.demo import DEMO_QUESTIONS, demo_database_path
from tests.server_process import free_port

pytestmark = [pytest.mark.server]

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = float(os.environ.get("ROUTE_GRAPH_STUDIO_TIMEOUT", "300"))
RUN_TIMEOUT_S = float(os.environ.get("ROUTE_GRAPH_STUDIO_RUN_TIMEOUT", "1800"))
GRAPH_ID = "route"  # the key in langgraph.json

# No network: CLI analytics, the server's PyPI version check, LangSmith tracing.
OFFLINE_ENV = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGGRAPH_NO_VERSION_CHECK": "true",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
}
DROP_ENV = ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY", "LANGGRAPH_CLOUD_LICENSE_KEY", "LANGSMITH_CONTROL_PLANE_API_KEY")

if os.environ.get("ROUTE_GRAPH_SKIP_STUDIO") == "1":
    pytest.skip("ROUTE_GRAPH_SKIP_STUDIO=1", allow_module_level=True)


@dataclass
class DevServer:
    url: str
    process: subprocess.Popen
    log: Path

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (uvicorn + its workers), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _wait_ready(server: DevServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"langgraph dev exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/ok", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"langgraph dev not ready after {START_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


@contextlib.contextmanager
def _dev_server(workdir: Path, config: str | Path) -> Iterator[DevServer]:
    """``langgraph dev`` on ``config`` (a langgraph.json), from the repository root; stopped after."""
    try:
        import langgraph_api  # noqa: F401  (the inmem extra: the server itself)
        import langgraph_cli  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"langgraph-cli[inmem] is not installed ({exc}); pip install -e '.[studio]'")
    port = free_port()
    log = workdir / "langgraph-dev.log"
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    env.update(OFFLINE_ENV)
    env["PYTHONUNBUFFERED"] = "1"  # the log file shows the server's tracebacks as they happen
    env["ROUTE_GRAPH_DB"] = str(demo_database_path())
    env.pop("ROUTE_GRAPH_MODEL", None)  # the offline default model
    cmd = [
        sys.executable, "-m", "langgraph_cli", "dev",
        "--config", str(config),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--no-browser",
        "--no-reload",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped as a whole
        )
    server = DevServer(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_ready(server)
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """The repository's langgraph.json: the real graph factory and the offline default model."""
    with _dev_server(tmp_path_factory.mktemp("studio"), "langgraph.json") as server:
        yield server


@pytest.fixture(scope="module")
def client(dev_server: DevServer):
    from langgraph_sdk import get_sync_client

    return get_sync_client(url=dev_server.url, api_key=None, timeout=RUN_TIMEOUT_S)


FAKE_GRAPH_ID = "route_fake"


@pytest.fixture(scope="module")
def fake_dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """A langgraph.json of its own serving tests/studio_fake_graph.py (fake model, demo database)."""
    workdir = tmp_path_factory.mktemp("studio_fake")
    config = workdir / "langgraph.json"
    config.write_text(json.dumps({
        "dependencies": ["."],
        "graphs": {FAKE_GRAPH_ID: f"{ROOT / 'tests' / 'studio_fake_graph.py'}:make_graph"},
    }))
    with _dev_server(workdir, config) as server:
        yield server


@pytest.fixture(scope="module")
def fake_client(fake_dev_server: DevServer):
    from langgraph_sdk import get_sync_client

    return get_sync_client(url=fake_dev_server.url, api_key=None, timeout=RUN_TIMEOUT_S)


@pytest.fixture(scope="module")
def assistant(client) -> dict:
    found = client.assistants.search(graph_id=GRAPH_ID)
    assert found, f"no assistant for graph {GRAPH_ID!r}"
    return found[0]


def _server_error(exc: Exception, server: DevServer) -> str:
    time.sleep(2)  # the server logs the traceback just after answering 500
    tail = server.log_tail()
    hint = ""
    if "BlockingError" in tail:
        hint = (
            "\nThe graph factory made a blocking call on the server's event loop: langgraph.json's "
            "factory must build the graph off the loop (async make_graph + asyncio.to_thread).\n"
        )
    return f"{type(exc).__name__}: {exc}{hint}\n--- langgraph dev log (tail) ---\n{tail}"


@pytest.mark.slow
def test_schemas_expose_input_and_route_config(client, assistant, dev_server: DevServer) -> None:
    try:
        schemas = client.assistants.get_schemas(assistant["assistant_id"])
    except Exception as exc:  # noqa: BLE001 - report the server's side of it
        pytest.fail(_server_error(exc, dev_server))
    context = schemas.get("context_schema") or {}
    props = context.get("properties", {})
    expected = RouteConfig.field_descriptions()
    assert set(props) == set(expected), f"context schema fields: {sorted(props)}"
    for name, description in expected.items():
        assert props[name].get("description") == description, name
        assert props[name].get("default") == getattr(RouteConfig(), name), name
    input_schema = schemas.get("input_schema") or {}
    assert "question" in input_schema.get("properties", {}), (
        "Studio's input form is built from the input schema, which the server could not produce:\n"
        + dev_server.log_tail()
    )
    assert set(input_schema["properties"]) == {"question", "hint", "messages"}
    assert "sql" in (schemas.get("output_schema") or {}).get("properties", {})


@pytest.mark.slow
def test_one_question_streams_node_updates(client, assistant, dev_server: DevServer) -> None:
    thread = client.threads.create()
    nodes: list[str] = []
    updates: dict[str, dict] = {}
    errors = []
    started = time.monotonic()
    try:
        for part in client.runs.stream(
            thread["thread_id"],
            assistant["assistant_id"],
            input={"question": DEMO_QUESTIONS[0]},
            context={"noise_correction": False},  # a RouteConfig field, as Studio's panel sets it
            stream_mode="updates",
        ):
            if part.event == "error":
                errors.append(part.data)
            elif part.event == "updates":
                for node, update in (part.data or {}).items():
                    nodes.append(node)
                    updates[node] = update or {}
    except Exception as exc:  # noqa: BLE001 - report the server's side of it
        pytest.fail(_server_error(exc, dev_server))
    elapsed = time.monotonic() - started
    assert not errors, f"run failed: {errors}\n{dev_server.log_tail()}"
    assert nodes[:3] == ["new_question", "schema_link", "generate"], nodes
    assert nodes[-2:] == ["finalize", "respond"], nodes
    assert "noise_correct" not in nodes, f"context noise_correction=False was ignored: {nodes}"
    assert set(nodes) <= {"new_question", "schema_link", "generate", "continue_write", "rescue", "finalize", "respond"}
    assert updates["schema_link"]["trace"][0]["stage"] == "schema_link"
    assert updates["generate"].get("sql"), updates["generate"]

    values = client.threads.get_state(thread["thread_id"])["values"]
    assert values.get("sql"), values
    assert values["question"] == DEMO_QUESTIONS[0]
    assert values["result"]["sql"] == values["sql"]
    assert [step["stage"] for step in values["trace"]] == nodes[1:-1]  # intake and reply leave no entry
    assert [m["type"] for m in values["messages"]] == ["human", "ai"]
    print(f"langgraph dev answered in {elapsed:.0f} s via {' -> '.join(nodes)}: {values['sql']}")


def test_route_config_field_names_are_studio_safe() -> None:
    """Studio renders the context schema as a form: only JSON-schema-friendly scalar fields."""
    for f in fields(RouteConfig):
        assert isinstance(getattr(RouteConfig(), f.name), (bool, int, float, str)), f.name


def _stream_run(client, thread_id: str, assistant_id: str, server: DevServer, **kwargs) -> list[str]:
    """One run streamed with ``stream_mode="updates"``; the nodes in the order they reported."""
    nodes: list[str] = []
    errors = []
    try:
        for part in client.runs.stream(thread_id, assistant_id, stream_mode="updates", **kwargs):
            if part.event == "error":
                errors.append(part.data)
            elif part.event == "updates":
                nodes.extend((part.data or {}).keys())
    except Exception as exc:  # noqa: BLE001 - report the server's side of it
        pytest.fail(_server_error(exc, server))
    assert not errors, f"run failed: {errors}\n{server.log_tail()}"
    return nodes


def test_three_questions_in_one_thread_through_the_api(fake_client, fake_dev_server: DevServer) -> None:
    """Issue 14 item 1 through langgraph dev: each run answers its own question, nothing stale."""
    from tests.studio_fake_graph import ANSWERS

    found = fake_client.assistants.search(graph_id=FAKE_GRAPH_ID)
    assert found, f"no assistant for graph {FAKE_GRAPH_ID!r}:\n{fake_dev_server.log_tail()}"
    assistant_id = found[0]["assistant_id"]
    thread_id = fake_client.threads.create()["thread_id"]
    questions = list(ANSWERS)
    contexts = [
        {},  # every stage
        {"schema_linking": False},  # a per-run override, as Studio's panel sets it
        # the SQL fails: nothing to fall back to, and no rescue to guess the misspelt name
        {"noise_correction": False, "continuation_writing": False, "rescue": False},
    ]
    for number, (question, context) in enumerate(zip(questions, contexts, strict=True), start=1):
        sql = ANSWERS[question][1]
        others = [ANSWERS[q][1] for q in questions if q != question]
        nodes = _stream_run(
            fake_client, thread_id, assistant_id, fake_dev_server, input={"question": question}, context=context
        )
        assert nodes[0] == "new_question" and nodes[-2:] == ["finalize", "respond"], nodes
        values = fake_client.threads.get_state(thread_id)["values"]
        assert values["question"] == question
        assert values["sql"] == sql, f"question {number} answered with {values['sql']!r}"
        assert values["result"]["sql"] == sql
        trace = values["trace"]
        assert [step["stage"] for step in trace] == nodes[1:-1], (nodes, trace)  # this run's only
        trace_text = json.dumps(trace)
        assert not any(other in trace_text for other in others), trace_text
        assert set(values["sql_by_stage"].values()) <= {sql}, values["sql_by_stage"]
        humans = [m["content"] for m in values["messages"] if m["type"] == "human"]
        assert humans == questions[:number]
        assert [m["type"] for m in values["messages"]] == ["human", "ai"] * number
        assert sql in values["messages"][-1]["content"]
        if number == 1:
            assert nodes[1:3] == ["schema_link", "generate"] and values["result"]["rows"] == [[3]]
        if number == 2:
            assert "schema_link" not in nodes and values["links"] == {}
            assert values["result"]["rows"] == [["Americanah"]]
        if number == 3:
            assert nodes[1:] == ["schema_link", "generate", "finalize", "respond"], nodes
            assert not values["result"]["ok"] and "nme" in values["result"]["error"]
            assert "fallback" not in trace[-1], trace[-1]
