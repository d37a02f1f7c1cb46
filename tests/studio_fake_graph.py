"""A ``langgraph dev`` graph factory with a fake model, for tests/test_studio.py's thread tests.

The server runs stages concurrently and in its own threads, so a model scripted by call order
would be fragile; this one answers from the question it finds in the prompt (``ANSWERS``), per
ROUTE task (``tests.fakes.task_of``). Served on the demo book-shop database, like the real graph.
"""

from __future__ import annotations

import asyncio
import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the server imports this file by path

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from route_graph.demo import demo_database_path
from route_graph.graph import build_route_graph
from tests.fakes import task_of

__all__ = ["ANSWERS", "QuestionKeyedChatModel", "make_graph"]

# question -> (schema links, SQL); the last one's SQL fails (a misspelt column).
ANSWERS: dict[str, tuple[dict[str, list[str]], str]] = {
    "How many customers are from Germany?": (
        {"customer": ["country"]},
        "SELECT COUNT(*) FROM customer WHERE country = 'Germany'",
    ),
    "What is the title of the most expensive book?": (
        {"book": ["title", "price"]},
        "SELECT title FROM book ORDER BY price DESC LIMIT 1",
    ),
    "List the customers' nme.": ({"customer": ["name"]}, "SELECT nme FROM customer"),
}


class QuestionKeyedChatModel(BaseChatModel):
    """Answers each ROUTE task for the question its prompt contains; fails loudly on any other."""

    @property
    def _llm_type(self) -> str:
        return "question-keyed-fake"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        text = str(messages[-1].content)
        found = [q for q in ANSWERS if q in text]
        if len(found) != 1:
            raise AssertionError(f"the prompt names {len(found)} known questions:\n{text}")
        links, sql = ANSWERS[found[0]]
        task = task_of(messages)
        if task == "sl":
            answer = json.dumps(links)
        elif task == "nc":
            answer = "The SQL is correct."
        elif task in ("ts", "nc_repair", "cw"):
            answer = f"```sql\n{sql}\n```"
        else:
            raise AssertionError(f"unexpected {task} call:\n{text}")
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=answer))])


@lru_cache(maxsize=1)
def _graph() -> CompiledStateGraph:
    return build_route_graph(QuestionKeyedChatModel(), demo_database_path(), name="route_fake")


async def make_graph(config: RunnableConfig | None = None) -> CompiledStateGraph:
    """The served graph, built off the server's event loop (it rejects blocking calls there)."""
    return await asyncio.to_thread(_graph)
