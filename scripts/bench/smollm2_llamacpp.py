"""Prefill and decode speed of SmolLM2-135M-Instruct from its Q4_1 GGUF file with llama.cpp
(llama-cpp-python, which pip builds from source), on the CPU with as many threads as cores:
the prompt of examples/smollm2_bench.rs (128 ordinary token ids) in one batch, then 64 greedy
tokens through the KV cache, end of sequence ignored; best of `repeats`."""

import json
import os
import sys
import time
from pathlib import Path

import llama_cpp
import numpy as np

prompt = int(sys.argv[1]) if len(sys.argv) > 1 else 128
new = int(sys.argv[2]) if len(sys.argv) > 2 else 64
repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
home = Path(os.environ.get("CALM_HOME", Path.home() / ".cache/calm"))
threads = os.cpu_count()
llm = llama_cpp.Llama(str(home / "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
                      n_ctx=prompt + new + 8, n_batch=max(prompt, 8), n_threads=threads,
                      n_threads_batch=threads, verbose=False)
ids = [1000 + (i * 7919) % 40000 for i in range(prompt)]
vocab = llm.n_vocab()


def greedy():
    """The most likely next token: llama.cpp keeps the last position's logits only."""
    return int(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,)).argmax())


best_prefill = best_decode = float("inf")
for attempt in range(repeats + 1):
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    prefill = time.perf_counter() - t0
    token = greedy()
    t0 = time.perf_counter()
    for _ in range(new):
        llm.eval([token])
        token = greedy()
    decode = (time.perf_counter() - t0) / new
    if attempt > 0:  # the first is a warm-up
        best_prefill, best_decode = min(best_prefill, prefill), min(best_decode, decode)
print(f"llama.cpp (llama-cpp-python {llama_cpp.__version__}, {threads} threads, Q4_1): "
      f"prefill {prompt / best_prefill:.1f} tokens/s ({prompt} tokens), "
      f"decode {1 / best_decode:.1f} tokens/s ({new} tokens), best of {repeats}")
for kind, value in [("prefill", prompt / best_prefill), ("decode", 1 / best_decode)]:
    print("bench " + json.dumps({"workload": f"smollm2_q4_1_{kind}", "unit": "tokens/s",
                                 "value": value}))
