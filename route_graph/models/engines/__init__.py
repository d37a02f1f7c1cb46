"""In-process engines behind LangChain's chat-model interface (the graph never imports these).

- ``llamacpp_chat``: GGUF files through llama.cpp (fast on CPUs without AMX; prefix KV reuse).
- ``transformers_chat``: Hugging Face directories through transformers (GPUs, bf16 on AMX).
- ``chat_common``: what both share (message flattening, stop rules).
"""

__all__: list[str] = []
