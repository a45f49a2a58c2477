"""Training steps per second of PyTorch's twin of examples/backend_step.rs: nn.TransformerEncoder,
4 pre-LN layers, d = 256, 8 heads, FFN 1024, GELU, dropout 0.1 (Burn's defaults), batch 8 x 64
tokens, loss mean(out^2), backward and an Adam step, on the CPU with as many threads as cores."""

import json
import os
import sys
import time

import torch

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
torch.set_num_threads(os.cpu_count())
torch.manual_seed(0)
layer = torch.nn.TransformerEncoderLayer(256, 8, 1024, dropout=0.1, activation="gelu",
                                         batch_first=True, norm_first=True)
model = torch.nn.TransformerEncoder(layer, 4, enable_nested_tensor=False).train()
optim = torch.optim.Adam(model.parameters(), lr=1e-4)
x = torch.randn(8, 64, 256)


def step():
    optim.zero_grad(set_to_none=True)
    loss = model(x).pow(2).mean()
    loss.backward()
    optim.step()
    return loss.item()


for _ in range(3):
    step()
start = time.perf_counter()
for _ in range(steps):
    step()
secs = time.perf_counter() - start
print(f"PyTorch {torch.__version__} (cpu, {torch.get_num_threads()} threads): "
      f"{steps} steps in {secs:.2f} s = {steps / secs:.2f} steps/s")
print("bench " + json.dumps({"workload": "transformer_train_step", "unit": "steps/s",
                             "value": steps / secs}))
