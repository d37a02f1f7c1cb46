"""Speed of the in-process default model on this CPU: warm load, prefill/decode rates, batch of 8 vs 8 sequential.

Run: python benchmarks/model_speed.py  (record the output in benchmarks/RESULTS.md)
"""
import time
t0 = time.perf_counter()
import torch, transformers  # noqa
from route_graph.models import ensure_default_model, load_chat_model
t1 = time.perf_counter()
ensure_default_model()
t2 = time.perf_counter()
llm = load_chat_model(max_new_tokens=64)
eng = llm.engine(); t3 = time.perf_counter()
print(f"threads={torch.get_num_threads()} dtype={eng.model.dtype}")
print(f"imports {t1-t0:.2f}s; ensure_default_model (cached) {1000*(t2-t1):.1f} ms; warm load (tokenizer+weights) {t3-t2:.2f}s")
# prefill vs decode on one short chat turn
from transformers import GenerationConfig
q = "Write a SQLite query that counts rows of table singer. Reply with SQL only."
llm.invoke(q)  # warm-up (oneDNN kernels)
from langchain_core.messages import HumanMessage
ids = eng.tokenizer(llm.render_prompt([HumanMessage(q)]), return_tensors="pt")
n = ids["input_ids"].shape[1]
with torch.inference_mode():
    for _ in range(2):
        t = time.perf_counter(); eng.model(**ids); pre = time.perf_counter() - t
    t = time.perf_counter()
    out = eng.model.generate(**ids, max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=eng.pad_id)
    gen = time.perf_counter() - t
print(f"prefill {n} tokens {pre*1000:.0f} ms ({n/pre:.0f} tok/s); 32 forced new tokens {gen:.2f}s -> decode ~{31/(gen-pre):.1f} tok/s")
r = llm.invoke(q)
print("invoke:", repr(r.content), r.usage_metadata, r.response_metadata)
# batch of 8 vs 8 sequential, ~40-token SQL answers
tables = ["singer", "concert", "stadium", "teacher", "course", "student", "pilot", "aircraft"]
qs = [f"Table {t}(id INTEGER, name TEXT, age INTEGER, country TEXT). Write a SQLite query listing the name and age of every {t} from France older than 30, oldest first. Reply with SQL only." for t in tables]
t = time.perf_counter(); seq = [llm.invoke(x) for x in qs]; ts = time.perf_counter() - t
t = time.perf_counter(); bat = llm.batch(qs); tb = time.perf_counter() - t
tok_s = sum(m.usage_metadata["output_tokens"] for m in seq)
tok_b = sum(m.usage_metadata["output_tokens"] for m in bat)
print(f"8 sequential: {ts:.1f}s ({tok_s} output tokens, {tok_s/ts:.1f} tok/s)")
print(f"batch of 8:   {tb:.1f}s ({tok_b} output tokens, {tok_b/tb:.1f} tok/s), batch sizes {[m.response_metadata['batch_size'] for m in bat]}")
same = [a.content == b.content for a, b in zip(seq, bat)]
print("batched == sequential:", same)
for a, b in zip(seq, bat):
    if a.content != b.content: print("  seq:", repr(a.content), "\n  bat:", repr(b.content))
print("example:", repr(seq[0].content))
