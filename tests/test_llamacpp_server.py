"""The graph through a real OpenAI-compatible server: llama.cpp's own (llama-cpp-python[server]).

The server serves the offline default model's GGUF on a free loopback port; the graph reaches it
through the documented spec ``openai:http://127.0.0.1:PORT/v1#NAME`` (``ChatOpenAI``), so request
features a server does not take (vLLM's prefill fields, ``response_format``) are exercised against
a real one: whatever it refuses must be dropped once, with one warning, and the question answered.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from route_graph import build_route_graph, load_chat_model
from tests.fakes import make_concert_db

pytestmark = [pytest.mark.server, pytest.mark.slow]
READY_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def llamacpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("llama_cpp.server", reason="the dev extra installs llama-cpp-python[server]")
    from route_graph._cache import ensure_offline_gguf

    gguf = ensure_offline_gguf("qwen2.5-coder-0.5b")
    port = _free_port()
    log = tmp_path_factory.mktemp("llamacpp-server") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "qwen",
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192", "--n_threads", "2"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        started = time.monotonic()
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama.cpp server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - started > READY_TIMEOUT_S:
                pytest.fail(f"llama.cpp server not ready after {READY_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"openai:{base}#qwen"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_graph_answers_through_the_llama_cpp_server(llamacpp_server: str, tmp_path: Path) -> None:
    llm = load_chat_model(llamacpp_server, max_new_tokens=256)
    assert type(llm).__name__ == "ChatOpenAI"
    graph = build_route_graph(llm, make_concert_db(tmp_path / "concert.sqlite"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = graph.invoke({"question": "How many singers are there?"})
    refused = [str(w.message) for w in caught if "rejected route-graph's" in str(w.message)]
    assert len(refused) <= 2, refused  # at most one warning per feature, however many calls
    assert out["result"]["ok"], out["result"]
    assert "singer" in out["sql"].lower() and [list(r) for r in out["result"]["rows"]] == [[3]]
    assert {entry["stage"] for entry in out["trace"]} >= {"schema_link", "generate", "finalize"}
