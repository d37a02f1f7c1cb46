"""What the model sees: the one place the graph and ``finetune`` build every stage's messages.

``ViewConfig`` holds the settings that decide it (``config``); ``stage_messages`` composes a
stage's messages from the prompt text (``route_graph.prompts``) and the schema rendering
(``route_graph.rendering``) (``stage``). ``parsing`` reads the model's answers.
"""

from route_graph.views.config import ViewConfig
from route_graph.views.stage import (
    Stage,
    execution_feedback,
    full_schema_text,
    linked_schema_text,
    question_values,
    stage_messages,
    stage_prefill,
)

__all__ = [
    "Stage", "ViewConfig", "execution_feedback", "full_schema_text", "linked_schema_text", "question_values",
    "stage_messages", "stage_prefill",
]
