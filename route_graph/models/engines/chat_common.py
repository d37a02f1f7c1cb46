"""What every in-process engine shares: message flattening, stop rules, CPU count.

Both engines (transformers and llama.cpp) render LangChain messages through a chat template,
stop once the reply holds what the graph's parsers read, and cut at stop strings the LangChain
way; keeping these in one place keeps their outputs comparable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from langchain_core.messages import BaseMessage

__all__ = [
    "answer_is_complete",
    "available_cpus",
    "conversation",
    "cut_at_stop",
    "message_role",
    "message_text",
]

_CLOSED_FENCE = re.compile(r"```[^\n`]*\n.*?```", re.DOTALL)


def answer_is_complete(text: str) -> bool:
    """True once a reply holds a closed code fence, or is a bare JSON object that has closed.

    Small models like to explain their SQL at length after the fenced answer; the graph's
    parsers read only the first fence (or the JSON object), so decoding can stop there.
    """
    if _CLOSED_FENCE.search(text):
        return True
    stripped = text.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        depth = 0
        in_string = False
        escaped = False
        for ch in stripped:
            if in_string:
                escaped = ch == "\\" and not escaped
                if ch == '"' and not escaped:
                    in_string = False
                continue
            if ch == '"':
                in_string = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
        return depth == 0
    return False


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """LangChain convention: the reply ends before the first stop string."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]



def message_role(message: BaseMessage) -> str:
    """Chat-template role of a LangChain message (``human`` -> ``user``)."""
    kind = message.type
    return {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}.get(
        kind, getattr(message, "role", kind)
    )


def message_text(message: BaseMessage) -> str:
    """Text of a message; content blocks joined, a missing content read as empty."""
    from route_graph.prompts import answer_text

    return answer_text(message.content)


def available_cpus() -> int:
    """CPUs this process may run on (affinity-aware), the default thread count of an engine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def conversation(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as the ``{"role", "content"}`` dicts chat templates consume."""
    return [{"role": message_role(m), "content": message_text(m)} for m in messages]
