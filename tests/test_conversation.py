"""Threads, chat messages, per-run context, agents and human review, with scripted fake models.

One question per run and many per thread (``InMemorySaver``): nothing of an earlier question
(trace, stage SQL, fallback candidates, hint) may reach a later one. Chat input (``messages``),
follow-up rewriting, the reply message, the compact tool and a ReAct agent; the review interrupt
with approve, edit (still guarded) and reject.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command

from route_graph import (
    ConfigError,
    InputError,
    RouteConfig,
    as_sql_tool,
    build_route_graph,
)
from route_graph.graph.conversation import REJECTED_ERROR
from tests.fakes import ScriptedChatModel, ToolCallingFakeChatModel, make_concert_db

SQL_UK = "SELECT COUNT(*) FROM singer WHERE country = 'UK'"
SQL_FRANCE = "SELECT COUNT(*) FROM singer WHERE country = 'France'"
SQL_FRENCH_NAMES = "SELECT name FROM singer WHERE country = 'France'"
GENERATE_ONLY = RouteConfig().with_stages("")  # one model call per question: generation


@pytest.fixture()
def db_path(tmp_path: Path) -> Path:
    return make_concert_db(tmp_path / "concert.sqlite")


def fence(sql: str) -> str:
    return f"```sql\n{sql}\n```"


def thread(name: str = "t1") -> dict:
    return {"configurable": {"thread_id": name}}


def stages(out: dict) -> list[str]:
    return [entry["stage"] for entry in out["trace"]]


def prompts_of(llm: ScriptedChatModel, task: str) -> list[str]:
    return [prompt for t, prompt in llm.calls if t == task]


def consumed(llm: ScriptedChatModel) -> bool:
    return all(not lines for lines in llm.scripts.values())


# ------------------------------------------------------------------------------ 1. threads


def test_failing_second_question_does_not_return_the_first_answer(db_path: Path) -> None:
    llm = ScriptedChatModel(scripts={"ts": [fence(SQL_UK), fence("SELECT nme FROM singer")]})
    graph = build_route_graph(llm, db_path, GENERATE_ONLY, checkpointer=InMemorySaver())
    first = graph.invoke({"question": "How many singers are from the UK?", "hint": "UK is a country"}, thread())
    assert first["sql"] == SQL_UK and first["result"]["rows"] == [[1]]

    second = graph.invoke({"question": "List the singers' nme."}, thread())
    # fallback_to_executable is on, but the first question's SQL is no candidate for the second.
    assert second["sql"] == "SELECT nme FROM singer" and not second["result"]["ok"]
    assert stages(second) == ["generate", "finalize"]
    assert "fallback" not in second["trace"][-1]
    assert second["sql_by_stage"] == {"generate": "SELECT nme FROM singer"}
    assert second["question"] == "List the singers' nme."
    # The hint belonged to the first question only.
    first_prompt, second_prompt = prompts_of(llm, "ts")
    assert "Hint: UK is a country" in first_prompt and "Hint:" not in second_prompt
    assert graph.get_state(thread()).values.get("hint") is None


def test_three_questions_in_one_thread_each_see_only_their_own_candidates(db_path: Path) -> None:
    llm = ScriptedChatModel(
        scripts={
            "sl": ['{"singer": ["name", "country"]}'],
            "ts": [
                fence("SELECT name FROM singer"),  # Q1 draft
                fence(SQL_FRENCH_NAMES),  # Q1 generate
                fence("SELECT capacity FROM stadium"),  # Q2 generate (schema linking off by context)
                fence("SELECT nme FROM singer"),  # Q3 generate, fails
            ],
            "nc": ["The SQL is correct.", "The SQL is correct."],
        }
    )
    graph = build_route_graph(llm, db_path, RouteConfig(continuation_writing=False, nc_verdict=True, rescue=False), checkpointer=InMemorySaver())
    q1 = graph.invoke({"question": "Which singers are from France?"}, thread())
    assert stages(q1) == ["schema_link", "generate", "noise_correct", "finalize"]
    assert q1["links"] == {"singer": ["name", "country"]}

    q2 = graph.invoke({"question": "What are the stadium capacities?"}, thread(), context={"schema_linking": False})
    assert stages(q2) == ["generate", "noise_correct", "finalize"]
    assert q2["links"] == {} and "draft" not in q2["sql_by_stage"]
    assert q2["sql"] == "SELECT capacity FROM stadium"

    q3 = graph.invoke(
        {"question": "Name them."}, thread(), context={"schema_linking": False, "noise_correction": False}
    )
    # Q1's draft and Q2's SQL both executed, but neither belongs to Q3: no fallback.
    assert stages(q3) == ["generate", "finalize"]
    assert q3["sql"] == "SELECT nme FROM singer" and not q3["result"]["ok"]
    assert q3["stage"] == "generate"
    assert [m.type for m in q3["messages"]] == ["human", "ai"] * 3
    assert [m.content for m in q3["messages"] if m.type == "human"] == [
        "Which singers are from France?", "What are the stadium capacities?", "Name them."
    ]
    assert consumed(llm)


def test_asking_the_same_question_again_answers_it_again(db_path: Path) -> None:
    llm = ScriptedChatModel(scripts={"ts": [fence(SQL_UK), fence(SQL_UK)]})
    graph = build_route_graph(llm, db_path, GENERATE_ONLY, checkpointer=InMemorySaver())
    for _ in range(2):
        out = graph.invoke({"question": "How many singers are from the UK?"}, thread())
        assert stages(out) == ["generate", "finalize"]
    assert consumed(llm) and len(out["messages"]) == 4


# ------------------------------------------------------------------------------ 2. context


def test_partial_context_keeps_the_build_time_config(db_path: Path) -> None:
    llm = ScriptedChatModel(scripts={"ts": [fence(SQL_FRENCH_NAMES)]})
    graph = build_route_graph(llm, db_path, RouteConfig(schema_linking=False, continuation_writing=False))
    out = graph.invoke({"question": "Which singers are from France?"}, context={"noise_correction": False})
    assert stages(out) == ["generate", "finalize"]  # schema linking still off, NC off for this run
    assert consumed(llm)


def test_route_config_context_overrides_only_the_fields_it_names(db_path: Path) -> None:
    llm = ScriptedChatModel(scripts={"ts": [fence(SQL_FRENCH_NAMES)]})
    graph = build_route_graph(llm, db_path, RouteConfig(schema_linking=False, continuation_writing=False))
    out = graph.invoke({"question": "Which singers are from France?"}, context=RouteConfig(noise_correction=False))
    assert stages(out) == ["generate", "finalize"]


def test_override_rules() -> None:
    base = RouteConfig(schema_linking=False, max_rows=7)
    assert base.override(None) is base and base.override(RouteConfig()) is base
    merged = base.override({"noise_correction": False})
    assert (merged.schema_linking, merged.noise_correction, merged.max_rows) == (False, False, 7)
    assert base.override(RouteConfig(max_rows=9)).max_rows == 9
    # replace()/with_stages() copies name every field: a full replacement.
    assert base.override(RouteConfig().with_stages("sl,nc,cw")).max_rows == 1000
    with pytest.raises(ConfigError, match="noise_corection"):
        base.override({"noise_corection": False})


# ------------------------------------------------------------------------------ 3. chat


def test_messages_input_without_history_is_asked_as_it_is(db_path: Path) -> None:
    llm = ScriptedChatModel(scripts={"ts": [fence(SQL_FRENCH_NAMES)]})
    graph = build_route_graph(llm, db_path, GENERATE_ONLY)
    out = graph.invoke({"messages": [("user", "Which singers are from France?")]})
    assert out["question"] == "Which singers are from France?"
    assert stages(out) == ["generate", "finalize"]  # no rewrite without history
    human, reply = out["messages"]
    assert human.type == "human" and isinstance(reply, AIMessage)
    assert SQL_FRENCH_NAMES in reply.content
    assert "| name |" in reply.content and "| Edith |" in reply.content and "2 rows." in reply.content


def test_follow_up_in_a_thread_is_rewritten_with_the_history(db_path: Path) -> None:
    llm = ScriptedChatModel(
        scripts={"ts": [fence(SQL_UK), fence(SQL_FRANCE)], "rewrite": ["How many singers are from France?"]}
    )
    graph = build_route_graph(llm, db_path, GENERATE_ONLY, checkpointer=InMemorySaver())
    graph.invoke({"question": "How many singers are from the UK?"}, thread())
    out = graph.invoke({"messages": [("user", "and in France?")]}, thread())
    assert stages(out) == ["rewrite_question", "generate", "finalize"]
    assert out["trace"][0]["original"] == "and in France?"
    assert out["question"] == "How many singers are from France?"
    assert out["sql"] == SQL_FRANCE and out["result"]["rows"] == [[2]]
    (rewrite_prompt,) = prompts_of(llm, "rewrite")
    assert "User: How many singers are from the UK?" in rewrite_prompt and SQL_UK in rewrite_prompt
    assert "Follow-up question: and in France?" in rewrite_prompt
    # The SQL stage saw the standalone question, not the follow-up.
    assert "Question: How many singers are from France?" in prompts_of(llm, "ts")[1]
    assert [m.type for m in out["messages"]] == ["human", "ai", "human", "ai"]

    # A third turn with a plain `question` is not rewritten and is not mistaken for the old one.
    llm.scripts["ts"].append(fence(SQL_FRENCH_NAMES))
    third = graph.invoke({"question": "Which singers are from France?"}, thread())
    assert stages(third) == ["generate", "finalize"] and third["sql"] == SQL_FRENCH_NAMES


def test_history_given_in_one_input_is_used_too(db_path: Path) -> None:
    llm = ScriptedChatModel(scripts={"ts": [fence(SQL_FRANCE)], "rewrite": ["How many singers are from France?"]})
    graph = build_route_graph(llm, db_path, GENERATE_ONLY)
    history = [
        HumanMessage("How many singers are from the UK?"),
        AIMessage(fence(SQL_UK) + "\n\n1 row."),
        HumanMessage("and in France?"),
    ]
    out = graph.invoke({"messages": history})
    assert out["question"] == "How many singers are from France?" and out["result"]["rows"] == [[2]]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "No question"),
        ({"question": ""}, "empty"),
        ({"question": "   \n"}, "empty"),
        ({"question": 42}, "must be a string"),
        ({"question": None}, "No question"),
        ({"messages": [("user", "  ")]}, "empty"),
        ({"messages": [AIMessage("Hello, ask me about the database.")]}, "No question"),
        ({"question": "q", "hint": 3}, "hint must be a string"),
    ],
)
def test_unusable_question_is_one_clear_error_before_any_model_call(
    db_path: Path, payload: dict, message: str
) -> None:
    llm = ScriptedChatModel(scripts={})
    graph = build_route_graph(llm, db_path)
    with pytest.raises(InputError, match=message) as info:
        graph.invoke(payload)
    if "hint" not in message:
        assert "graph.invoke({'question'" in str(info.value)
    assert llm.calls == []


def test_answer_in_words_is_added_to_the_reply(db_path: Path) -> None:
    llm = ScriptedChatModel(
        scripts={"ts": [fence(SQL_FRENCH_NAMES)], "answer": ["Edith and Jacques are from France."]}
    )
    graph = build_route_graph(llm, db_path, GENERATE_ONLY)
    out = graph.invoke({"question": "Which singers are from France?"}, context={"answer_in_words": True})
    reply = out["messages"][-1].content
    assert reply.startswith("Edith and Jacques are from France.") and SQL_FRENCH_NAMES in reply
    assert stages(out) == ["generate", "finalize", "respond"] and out["trace"][-1]["llm_calls"] == 1
    assert "Edith" in prompts_of(llm, "answer")[0]  # the model saw the result


def test_reply_table_is_cut_at_reply_rows(db_path: Path) -> None:
    llm = ScriptedChatModel(scripts={"ts": [fence(SQL_FRENCH_NAMES)]})
    out = build_route_graph(llm, db_path, GENERATE_ONLY).invoke(
        {"question": "Which singers are from France?"}, context={"reply_rows": 1}
    )
    reply = out["messages"][-1].content
    assert "| Edith |" in reply and "Jacques" not in reply and "2 rows (first 1 shown)." in reply
    assert len(out["result"]["rows"]) == 2  # the state keeps the whole result


def test_sql_tool_returns_compact_output(db_path: Path) -> None:
    llm = ScriptedChatModel(scripts={"ts": [fence(SQL_FRENCH_NAMES)]})
    tool = as_sql_tool(build_route_graph(llm, db_path, GENERATE_ONLY), max_rows=1)
    assert set(tool.args) == {"question", "hint"}
    out = tool.invoke({"question": "Which singers are from France?"})
    assert out == {
        "question": "Which singers are from France?",
        "sql": SQL_FRENCH_NAMES,
        "ok": True,
        "columns": ["name"],
        "rows": [["Edith"]],
        "row_count": 2,
        "truncated": True,
        "error": None,
    }


def test_react_agent_uses_the_graph_as_a_tool(db_path: Path) -> None:
    from langgraph.prebuilt import create_react_agent

    route_llm = ScriptedChatModel(scripts={"ts": [fence(SQL_FRENCH_NAMES)]})
    tool = as_sql_tool(build_route_graph(route_llm, db_path, GENERATE_ONLY))
    agent_llm = ToolCallingFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    content="",
                    tool_calls=[{"name": tool.name, "args": {"question": "Which singers are from France?"}, "id": "c1"}],
                ),
                AIMessage(content="Edith and Jacques."),
            ]
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # moved to langchain.agents in LangChain 1.0
        agent = create_react_agent(agent_llm, [tool], checkpointer=InMemorySaver())
    out = agent.invoke({"messages": [("user", "Who sings from France?")]}, thread("agent"))
    tool_message = next(m for m in out["messages"] if m.type == "tool")
    assert SQL_FRENCH_NAMES in tool_message.content and "Jacques" in tool_message.content
    assert "trace" not in tool_message.content
    assert out["messages"][-1].content == "Edith and Jacques."
    assert consumed(route_llm)


def test_graph_is_a_chat_node_in_a_parent_graph(db_path: Path) -> None:
    llm = ScriptedChatModel(
        scripts={"ts": [fence(SQL_UK), fence(SQL_FRANCE)], "rewrite": ["How many singers are from France?"]}
    )
    parent = StateGraph(MessagesState)
    parent.add_node("sql", build_route_graph(llm, db_path, GENERATE_ONLY))
    parent.add_edge(START, "sql")
    parent.add_edge("sql", END)
    app = parent.compile(checkpointer=InMemorySaver())
    app.invoke({"messages": [("user", "How many singers are from the UK?")]}, thread("parent"))
    out = app.invoke({"messages": [("user", "and in France?")]}, thread("parent"))
    assert [m.type for m in out["messages"]] == ["human", "ai", "human", "ai"]
    assert SQL_FRANCE in out["messages"][-1].content and "| 2 |" in out["messages"][-1].content
    assert llm.tasks() == ["ts", "rewrite", "ts"]


# ------------------------------------------------------------------------------ 4. review


def review_graph(db_path: Path, sql: str = SQL_FRENCH_NAMES) -> tuple:
    llm = ScriptedChatModel(scripts={"ts": [fence(sql)]})
    config = RouteConfig(review_before_execution=True).with_stages("")
    return build_route_graph(llm, db_path, config, checkpointer=InMemorySaver()), llm


def test_review_pauses_before_the_answer_and_approve_returns_it(db_path: Path) -> None:
    graph, _ = review_graph(db_path)
    paused = graph.invoke({"question": "Which singers are from France?"}, thread())
    (pending,) = paused["__interrupt__"]
    assert pending.value["sql"] == SQL_FRENCH_NAMES and pending.value["actions"] == ["approve", "edit", "reject"]
    assert graph.get_state(thread()).next == ("review",)
    assert [m.type for m in paused["messages"]] == ["human"]  # no answer yet

    out = graph.invoke(Command(resume={"action": "approve"}), thread())
    assert out["sql"] == SQL_FRENCH_NAMES and out["result"]["ok"] and out["result"]["row_count"] == 2
    assert stages(out) == ["generate", "finalize", "review"]
    assert out["trace"][-1]["action"] == "approve" and out["stage"] == "generate"
    assert out["messages"][-1].type == "ai" and SQL_FRENCH_NAMES in out["messages"][-1].content


def test_review_edit_runs_the_edited_sql(db_path: Path) -> None:
    graph, _ = review_graph(db_path)
    graph.invoke({"question": "Which singers are from France?"}, thread())
    edited = "SELECT name FROM singer WHERE country = 'France' AND age > 50"
    out = graph.invoke(Command(resume={"action": "edit", "sql": edited}), thread())
    assert out["sql"] == edited and out["stage"] == "review"
    assert out["result"]["rows"] == [["Jacques"]]


def test_review_edit_still_goes_through_the_guard(db_path: Path) -> None:
    before = hashlib.sha256(db_path.read_bytes()).hexdigest()
    graph, _ = review_graph(db_path)
    graph.invoke({"question": "Which singers are from France?"}, thread())
    out = graph.invoke(Command(resume={"action": "edit", "sql": "DELETE FROM singer"}), thread())
    assert not out["result"]["ok"] and out["result"]["error_kind"] == "rejected"
    assert hashlib.sha256(db_path.read_bytes()).hexdigest() == before


def test_review_reject_gives_no_answer(db_path: Path) -> None:
    graph, _ = review_graph(db_path)
    graph.invoke({"question": "Which singers are from France?"}, thread())
    out = graph.invoke(Command(resume={"action": "reject"}), thread())
    assert out["sql"] == "" and not out["result"]["ok"] and out["result"]["error"] == REJECTED_ERROR
    assert out["trace"][-1] == {
        "stage": "review", "action": "reject", "proposed_sql": SQL_FRENCH_NAMES, "accepted": False, "executed": False
    }
    assert REJECTED_ERROR in out["messages"][-1].content


def test_unusable_review_answer_is_asked_again(db_path: Path) -> None:
    graph, _ = review_graph(db_path)
    graph.invoke({"question": "Which singers are from France?"}, thread())
    again = graph.invoke(Command(resume={"action": "maybe"}), thread())
    (pending,) = again["__interrupt__"]
    assert "Unknown review action 'maybe'" in pending.value["error"]
    again = graph.invoke(Command(resume={"action": "edit"}), thread())  # no SQL given
    assert "needs the edited SQL" in again["__interrupt__"][0].value["error"]
    out = graph.invoke(Command(resume="approve"), thread())
    assert out["result"]["ok"] and out["trace"][-1]["action"] == "approve"


def test_review_can_be_switched_on_per_run(db_path: Path) -> None:
    llm = ScriptedChatModel(scripts={"ts": [fence(SQL_FRENCH_NAMES)]})
    graph = build_route_graph(llm, db_path, GENERATE_ONLY, checkpointer=InMemorySaver())
    paused = graph.invoke({"question": "q"}, thread(), context={"review_before_execution": True})
    assert paused["__interrupt__"]
    out = graph.invoke(Command(resume={"action": "approve"}), thread(), context={"review_before_execution": True})
    assert out["result"]["ok"]


def test_review_without_checkpointer_fails_before_any_model_call(db_path: Path) -> None:
    llm = ScriptedChatModel(scripts={})
    graph = build_route_graph(llm, db_path, RouteConfig(review_before_execution=True))
    with pytest.raises(ConfigError, match="checkpointer"):
        graph.invoke({"question": "Which singers are from France?"})
    assert llm.calls == []


# ------------------------------------------------------------------------------ streaming
def _streamed_ai_texts(graph, payload: dict, **kwargs) -> list[str]:
    texts: dict[str, str] = {}
    for chunk, _meta in graph.stream(payload, stream_mode="messages", **kwargs):
        if chunk.type in ("ai", "AIMessageChunk"):
            texts[chunk.id] = texts.get(chunk.id, "") + str(chunk.content)
    return list(texts.values())


def test_messages_stream_shows_only_the_reply_by_default(db_path: Path) -> None:
    def model() -> ScriptedChatModel:
        return ScriptedChatModel(scripts={
            "sl": ['{"singer": ["name", "country"]}'], "ts": [fence(SQL_FRENCH_NAMES)] * 2,
            "nc": ["The SQL is correct."], "answer": ["Edith and Jacques are from France."],
        })

    payload = {"question": "Which singers are from France?"}
    context = {"answer_in_words": True}
    texts = _streamed_ai_texts(build_route_graph(model(), db_path), payload, context=context)
    assert texts and all("Edith and Jacques are from France." in t for t in texts), texts
    assert not any('{"singer"' in t for t in texts)  # no schema-linking JSON, no draft SQL
    internal = _streamed_ai_texts(build_route_graph(model(), db_path), payload,
                                  context={**context, "stream_internal_calls": True})
    assert any('{"singer"' in t for t in internal) and len(internal) > len(texts)


def test_over_long_question_or_hint_is_refused_before_any_model_call(db_path: Path) -> None:
    llm = ScriptedChatModel(scripts={})
    graph = build_route_graph(llm, db_path)
    with pytest.raises(InputError, match="at most 2,000 are accepted.*max_question_chars"):
        graph.invoke({"question": "Which singers? " * 200})
    with pytest.raises(InputError, match="max_hint_chars"):
        graph.invoke({"question": "Which singers?", "hint": "x" * 5000})
    with pytest.raises(InputError, match="at most 10 are accepted"):
        graph.invoke({"question": "Which singers are from France?"}, context={"max_question_chars": 10})
    assert llm.calls == []


def test_graph_as_tool_takes_the_question_alone(db_path: Path) -> None:
    llm = ScriptedChatModel(scripts={"ts": [fence(SQL_FRENCH_NAMES)]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as_tool is marked beta by langchain-core
        tool = build_route_graph(llm, db_path, GENERATE_ONLY).as_tool(name="ask_db")
    assert tool.name == "ask_db" and set(tool.args) == {"question", "hint"}
    out = tool.invoke({"question": "Which singers are from France?"})
    assert out["sql"] == SQL_FRENCH_NAMES and [list(r) for r in out["result"]["rows"]] == [["Edith"], ["Jacques"]]
