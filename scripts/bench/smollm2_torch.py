"""Prefill and decode speed of SmolLM2-135M-Instruct in f32 with HF transformers, from the same
Q4_1 GGUF (transformers dequantises it), on the CPU with as many threads as cores: the same
prompt of 128 token ids in one forward, then 64 greedy tokens with the KV cache."""

import json
import os
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

prompt = int(sys.argv[1]) if len(sys.argv) > 1 else 128
new = int(sys.argv[2]) if len(sys.argv) > 2 else 64
repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
torch.set_num_threads(os.cpu_count())
home = Path(os.environ.get("CALM_HOME", Path.home() / ".cache/calm"))
model = AutoModelForCausalLM.from_pretrained(
    home / "models/smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32
).eval()
ids = torch.tensor([[1000 + (i * 7919) % 40000 for i in range(prompt)]])
best_prefill = best_decode = float("inf")
with torch.inference_mode():
    model(ids)
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(ids).logits.sum().item()
        best_prefill = min(best_prefill, time.perf_counter() - t0)
        out = model(ids, use_cache=True)
        past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(new):
            out = model(token, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        token.item()
        best_decode = min(best_decode, (time.perf_counter() - t0) / new)
print(f"PyTorch {torch.__version__} (cpu, {torch.get_num_threads()} threads, f32): "
      f"prefill {prompt / best_prefill:.1f} tokens/s ({prompt} tokens), "
      f"decode {1 / best_decode:.1f} tokens/s ({new} tokens), best of {repeats}")
for kind, value in [("prefill", prompt / best_prefill), ("decode", 1 / best_decode)]:
    print("bench " + json.dumps({"workload": f"smollm2_f32_{kind}", "unit": "tokens/s",
                                 "value": value}))
