"""llama.cpp (llama-cpp-python, which pip builds from source) on a GGUF file, for the figure
beside calm's `inspect generate` on the 7B-shaped Q4_0 file of make_llama7b_q4_0.py: the same
prompt text (tokenised by llama.cpp, no BOS), then 32 greedy tokens through the KV cache, end
of sequence ignored, as many threads as cores. Prints one line with the prompt and decode
speeds and the process's peak resident size.

    python scripts/bench/llama7b_llamacpp.py FILE.gguf ["prompt text"] [new tokens]
"""

import os
import resource
import sys
import time

import llama_cpp
import numpy as np

path = sys.argv[1]
text = sys.argv[2] if len(sys.argv) > 2 else "A photograph of a lighthouse at dusk"
new = int(sys.argv[3]) if len(sys.argv) > 3 else 32
threads = os.cpu_count()
llm = llama_cpp.Llama(path, n_ctx=new + 64, n_batch=64, n_threads=threads,
                      n_threads_batch=threads, verbose=False)
ids = llm.tokenize(text.encode(), add_bos=False)
vocab = llm.n_vocab()


def greedy():
    return int(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,)).argmax())


t0 = time.perf_counter()
llm.eval(ids)
token = greedy()
t1 = time.perf_counter()
for _ in range(new):
    llm.eval([token])
    token = greedy()
t2 = time.perf_counter()
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1000
print(f"llama.cpp (llama-cpp-python {llama_cpp.__version__}, {threads} threads): prompt "
      f"{len(ids)} tokens at {len(ids) / (t1 - t0):.2f} tokens/s, generated {new} tokens at "
      f"{new / (t2 - t1):.2f} tokens/s, peak RSS {peak_mb} MB")
