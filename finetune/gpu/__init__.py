"""Training on a remote GPU machine without network access: pack the run here, train there, unpack.

The GPU machine (the ``run`` tool's) has PyTorch, transformers and peft but no network, no
route_graph and no finetune package, and files reach it only as size-capped, git-ignored folders.
So the work is split in two:

- ``bundle`` (this machine): mixes and encodes the records with ``finetune.training.train``'s own
  code, writes them as token-id shards with a manifest (``.gpu_bundle/``), plans the ``run`` calls
  that carry it over, and joins the adapter the device sends back
  (``python -m finetune.gpu.bundle build|plan|collect``);
- ``train`` (the device): a standalone script, run by path (``python3 finetune/gpu/train.py``), that
  imports only the standard library, numpy, torch, transformers, peft and safetensors, and trains
  LoRA from the token ids: nothing there renders a prompt.
"""

__all__: list[str] = []
