"""Provider capabilities: which request features each chat model gets, and degrading when refused.

The hosted-OpenAI case runs a real ``ChatOpenAI`` client against a local HTTP stand-in that
answers as the OpenAI API does: HTTP 400 "Unrecognized request argument supplied" for any field
it does not know (vLLM's ``continue_final_message`` / ``add_generation_prompt``). No network.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from route_graph import RouteConfig, build_route_graph
from route_graph.errors import ModelError
from route_graph.model_capabilities import (
    bind_json_schema,
    continuing_model,
    model_capabilities,
    model_failure_error,
    rejects_request_feature,
)
from tests.fakes import ScriptedChatModel, make_concert_db

pytest.importorskip("langchain_openai", reason="the [openai] extra is part of [all]; CI installs it")
from langchain_openai import AzureChatOpenAI, ChatOpenAI

# Fields OpenAI's chat completions endpoint knows (a subset is enough: what LangChain sends).
OPENAI_FIELDS = {
    "model", "messages", "temperature", "top_p", "n", "stream", "stop", "max_tokens", "max_completion_tokens",
    "presence_penalty", "frequency_penalty", "logit_bias", "user", "response_format", "seed", "tools",
    "tool_choice", "parallel_tool_calls", "stream_options", "logprobs", "top_logprobs",
}
SQL = "SELECT count(*) FROM singer"


class _OpenAIStandIn(BaseHTTPRequestHandler):
    """Chat completions as the OpenAI API answers them: unknown fields are a 400."""

    requests: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        unknown = sorted(set(body) - OPENAI_FIELDS)
        if unknown:
            self._reply(400, {"error": {
                "message": f"Unrecognized request argument supplied: {unknown[0]}",
                "type": "invalid_request_error", "param": None, "code": None,
            }})
            return
        last = str(body["messages"][-1]["content"])
        if "response_format" in body:
            content = json.dumps({"singer": ["singer_id", "name", "country"]})
        elif "Which tables and columns are needed" in last:
            content = '{"singer": ["singer_id", "name"]}'
        elif "Candidate SQL:" in last:
            content = "The SQL is correct."
        else:
            content = f"```sql\n{SQL}\n```"
        self._reply(200, {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })


@pytest.fixture()
def concert_db(tmp_path: Path) -> Path:
    return make_concert_db(tmp_path / "concert.sqlite")


@pytest.fixture()
def standin() -> Iterator[str]:
    _OpenAIStandIn.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OpenAIStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_hosted_openai_gets_no_vllm_fields() -> None:
    hosted = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test")
    caps = model_capabilities(hosted)
    assert (caps.prefill, caps.json_schema) == (None, "response_format")
    assert continuing_model(hosted) is None
    bound = bind_json_schema(hosted, "links", {"type": "object"})
    assert bound.kwargs["response_format"]["type"] == "json_schema"
    azure = AzureChatOpenAI(
        azure_endpoint="https://example.openai.azure.com", api_version="2024-10-21", api_key="k", azure_deployment="d"
    )
    assert model_capabilities(azure).prefill is None


def test_local_openai_server_gets_vllm_prefill() -> None:
    local = ChatOpenAI(model="m", api_key="x", base_url="http://127.0.0.1:8000/v1")
    assert model_capabilities(local).prefill == "vllm"
    assert continuing_model(local).kwargs["extra_body"] == {"continue_final_message": True, "add_generation_prompt": False}


def test_unknown_model_gets_plain_prompts() -> None:
    fake = ScriptedChatModel(scripts={})
    assert model_capabilities(fake).prefill is None and model_capabilities(fake).json_schema is None
    assert continuing_model(fake) is None
    assert bind_json_schema(fake, "links", {}) is fake


def test_other_providers_by_class() -> None:
    ollama = pytest.importorskip("langchain_ollama")
    anthropic = pytest.importorskip("langchain_anthropic")
    chat_ollama = ollama.ChatOllama(model="qwen2.5-coder:0.5b")
    assert model_capabilities(chat_ollama).json_schema == "ollama_format"
    assert bind_json_schema(chat_ollama, "links", {"type": "object"}).kwargs == {"format": {"type": "object"}}
    chat_anthropic = anthropic.ChatAnthropic(model="claude-haiku-4-5", api_key="k")
    assert model_capabilities(chat_anthropic).prefill == "assistant_turn"
    assert continuing_model(chat_anthropic) is chat_anthropic


def test_rejected_field_is_recognised_and_other_errors_are_not() -> None:
    class BadRequest(Exception):
        status_code = 400

    class Unauthorized(Exception):
        status_code = 401

    assert rejects_request_feature(BadRequest("Unrecognized request argument supplied: add_generation_prompt"))
    assert not rejects_request_feature(BadRequest("This model's maximum context length is 8192 tokens"))
    assert not rejects_request_feature(Unauthorized("Unrecognized request argument supplied: x"))

    class ServerError(Exception):
        status_code = 500

    # llama-cpp-python's server, asked for response_format json_schema (seen in tests/test_llamacpp_server.py)
    llamacpp = ("Error code: 500 - 1 validation error:\n{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
                "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}")
    assert rejects_request_feature(ServerError(llamacpp))
    assert not rejects_request_feature(ServerError("Internal server error: CUDA out of memory"))
    error = model_failure_error(Unauthorized("Incorrect API key provided"))
    assert isinstance(error, ModelError) and "API key" in str(error)
    assert model_failure_error(ValueError("a hiccup")) is None


def test_openai_400_on_vllm_fields_degrades_once_and_answers(standin: str, concert_db: Path) -> None:
    llm = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test", base_url=standin, max_retries=0)
    assert model_capabilities(llm).prefill == "vllm"  # a local URL looks like vLLM: the stand-in refuses
    graph = build_route_graph(llm, concert_db)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = graph.invoke({"question": "How many singers are there?"})
        again = graph.invoke({"question": "How many singers are there?"})
    ours = [w for w in caught if "rejected route-graph's answer prefill" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    assert out["sql"] == SQL and [list(r) for r in out["result"]["rows"]] == [[3]]
    assert again["sql"] == SQL
    refused = [r for r in _OpenAIStandIn.requests if "continue_final_message" in r]
    assert len(refused) == 1  # one refused try, then plain requests only


def test_prefill_can_be_turned_off_by_hand(standin: str, concert_db: Path) -> None:
    llm = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test", base_url=standin, max_retries=0)
    graph = build_route_graph(llm, concert_db, RouteConfig(answer_prefill=False, constrained_json=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no degrade warning: nothing was refused
        out = graph.invoke({"question": "How many singers are there?"})
    assert out["sql"] == SQL
    assert not any("continue_final_message" in r or "response_format" in r for r in _OpenAIStandIn.requests)


# ------------------------------------------------------------------ 'PROVIDER:MODEL' specs (init_chat_model)
def test_provider_specs_build_langchains_classes_with_their_capabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("langchain")
    pytest.importorskip("langchain_ollama")
    pytest.importorskip("langchain_anthropic")
    from route_graph.models import load_chat_model

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    openai = load_chat_model("openai:gpt-4o-mini", max_new_tokens=99)
    assert type(openai).__name__ == "ChatOpenAI" and openai.model_name == "gpt-4o-mini" and openai.max_tokens == 99
    assert model_capabilities(openai).provider == "OpenAI API" and continuing_model(openai) is None
    ollama = load_chat_model("ollama:qwen2.5-coder:0.5b", max_new_tokens=64)
    assert type(ollama).__name__ == "ChatOllama" and ollama.model == "qwen2.5-coder:0.5b" and ollama.num_predict == 64
    assert model_capabilities(ollama).json_schema == "ollama_format"
    claude = load_chat_model("anthropic:claude-haiku-4-5")
    assert type(claude).__name__ == "ChatAnthropic" and model_capabilities(claude).prefill == "assistant_turn"


def test_provider_spec_without_credentials_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("langchain")
    from route_graph.models import load_chat_model

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_ADMIN_KEY", raising=False)
    with pytest.raises(ModelError, match="OPENAI_API_KEY"):
        load_chat_model("openai:gpt-4o-mini")


def test_anthropic_prefill_is_sent_without_trailing_whitespace(concert_db: Path) -> None:
    """Anthropic refuses a prefilled assistant turn that ends in whitespace: the graph strips it."""
    from langchain_core.messages import BaseMessage

    prefills: list[str] = []

    class AssistantTurnModel(ScriptedChatModel):
        def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any):
            if messages[-1].type == "ai":
                prefills.append(str(messages[-1].content))
            return super()._generate(messages, stop, run_manager, **kwargs)

    AssistantTurnModel.__name__ = "ChatAnthropic"  # recognised by class name, as the real one is
    llm = AssistantTurnModel(scripts={"sl": ['{"singer": ["name"]}'] * 2, "ts": [f"\n{SQL}\n```"] * 4})
    out = build_route_graph(llm, concert_db, RouteConfig(noise_correction=False, continuation_writing=False)).invoke(
        {"question": "How many singers are there?"}
    )
    assert prefills and all(p == p.rstrip() for p in prefills)
    assert out["sql"] == SQL
