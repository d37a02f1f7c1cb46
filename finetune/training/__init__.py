"""Training on the records: encode, mix, fine-tune with checkpoints, then commit or export the result.

- ``train``: LoRA or full fine-tuning with transformers' ``Trainer`` (``build_training_set``, the
  base model, precision); ``encoding`` (chat template, completion-only labels), ``mixing`` (task
  quotas) and ``prefix_groups`` (records sharing a prompt prefix run it once) feed it;
- ``checkpoints``: the run key and the checkpoints that let a run survive a session's end;
- ``phases``: a finished phase's adapter committed to the repository, for the next session;
- ``export``: merge an adapter into a standalone model, or check it for vLLM;
- ``tiny``: a tiny chat model built without a download, for smoke tests and dry runs.

Heavy dependencies (torch, transformers, peft) load inside the functions that need them.
"""

__all__: list[str] = []
