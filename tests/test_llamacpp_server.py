"""The graph through llama.cpp's own OpenAI-compatible server (llama-cpp-python[server]).

The server serves the offline default model's GGUF on a free loopback port; the graph reaches it
through the documented spec ``openai:http://127.0.0.1:PORT/v1#NAME`` (``ChatOpenAI``). A server
that is not vLLM meets route-graph's request features for real: whatever it refuses must be
dropped once, with one warning, and the question still answered on a real database.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator

import pytest

from route_graph import build_route_graph, load_chat_model
from route_graph.demo import demo_database_path
from tests.server_process import free_port, serving

pytestmark = [pytest.mark.server, pytest.mark.slow]
READY_TIMEOUT_S = 180
NAME = "qwen"


@pytest.fixture(scope="module")
def llamacpp_spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("llama_cpp.server", reason="the dev extra installs llama-cpp-python[server]")
    from route_graph.models.cache import ensure_offline_gguf

    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(ensure_offline_gguf("qwen2.5-coder-0.5b")),
           "--model_alias", NAME, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192", "--n_threads", "2"]
    log = tmp_path_factory.mktemp("llamacpp-server") / "server.log"
    with serving(cmd, base_url, NAME, log, READY_TIMEOUT_S, label="llama.cpp server") as ready_s:
        print(f"\n[llama.cpp server] ready in {ready_s:.1f} s at {base_url}")
        yield f"openai:{base_url}#{NAME}"


def test_graph_answers_through_the_llama_cpp_server(llamacpp_spec: str) -> None:
    llm = load_chat_model(llamacpp_spec, max_new_tokens=256)
    assert type(llm).__name__ == "ChatOpenAI"
    graph = build_route_graph(llm, demo_database_path())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = graph.invoke({"question": "How many customers are from Germany?"})
        again = graph.invoke({"question": "What is the title of the most expensive book?"})
    refused = [str(w.message) for w in caught if "rejected" in str(w.message)]
    print("\n[llama.cpp server] warnings:", refused, "\nSQL:", out["sql"], "|", again["sql"])
    assert len(refused) <= 2, refused  # at most one warning per refused feature, however many calls
    assert out["result"]["ok"] and again["result"]["ok"], (out["result"], again["result"])
    assert "customer" in out["sql"].lower() and "germany" in out["sql"].lower()
    assert "book" in again["sql"].lower()
    assert {entry["stage"] for entry in out["trace"]} >= {"schema_link", "generate", "finalize"}
