"""Training data: filter noisy pairs, then turn each question/SQL pair into TS, SL, NC and CW records.

Every prompt in a record comes from ``route_graph.views`` (the composition the graph's stages call,
under the run's ``ViewConfig``), so a tuned model sees at training time the text MCP shows it:

- ``filtering``: drop pairs whose gold SQL fails, times out or a judge rejects;
- ``synthesis``: one pair -> the four tasks' records; ``corruption`` proposes the wrong SQL for NC
  and ``sqltext`` normalises targets and cuts CW prefixes;
- ``sampling``: NC records from the model's own sampled answers, labelled by execution;
- ``mining``: NC records (verdict and repair) from the model's own greedy SQL on the linked view,
  labelled by execution, resumable (``route-finetune mine``);
- ``records``: the JSONL record format (TRL's prompt/completion) that training reads.
"""

__all__: list[str] = []
