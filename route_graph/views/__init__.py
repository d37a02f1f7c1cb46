"""What the model sees: the one place the graph and ``finetune`` build every stage's messages.

``ViewConfig`` holds the settings that decide it (``config``); ``stage_messages`` composes a
stage's messages from the prompt text (``route_graph.prompts``) and the schema rendering
(``route_graph.rendering``) (``stage``). ``parsing`` reads the model's answers.
"""

from route_graph.views.config import ViewConfig
from route_graph.views.stage import (
    NO_SQL_ERROR,
    Stage,
    execution_feedback,
    full_schema_text,
    linked_schema_text,
    no_sql_result,
    question_values,
    repair_problem,
    stage_messages,
    stage_prefill,
)

__all__ = [
    "NO_SQL_ERROR", "Stage", "ViewConfig", "execution_feedback", "full_schema_text", "linked_schema_text",
    "no_sql_result", "question_values", "repair_problem", "stage_messages", "stage_prefill",
]
