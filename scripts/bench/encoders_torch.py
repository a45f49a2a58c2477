"""PyTorch twin of examples/encoders_bench.rs: EfficientNet-Lite0 (timm's, the same ImageNet
weights with their keys renamed as scripts/fixtures/make_efficientnet_fixtures.py does) at
224 px, batch 8, and MiniLM-L6 (transformers' BertModel from the same folder) on 16 sequences
of 128 tokens, on the CPU with as many threads as cores."""

import json
import os
import sys
import time
from pathlib import Path

import timm
import torch
from transformers import BertModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from make_efficientnet_fixtures import timm_state_dict  # noqa: E402

iters = int(sys.argv[1]) if len(sys.argv) > 1 else 5
torch.set_num_threads(os.cpu_count())
home = Path(os.environ.get("CALM_HOME", Path.home() / ".cache/calm"))


def timed(run):
    run()
    start = time.perf_counter()
    for _ in range(iters):
        run()
    return iters / (time.perf_counter() - start)


def bench(workload, unit, value):
    print("bench " + json.dumps({"workload": workload, "unit": unit, "value": value}))


with torch.inference_mode():
    cnn = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    pth = home / "models/efficientnet-lite0/efficientnet-lite0-57934424.pth"
    cnn.load_state_dict(timm_state_dict(torch.load(pth, map_location="cpu")), strict=True)
    x = torch.randn(8, 3, 224, 224)
    rate = timed(lambda: cnn(x).sum().item()) * 8
    print(f"PyTorch {torch.__version__}: EfficientNet-Lite0 {rate:.2f} images/s (8 x 224 px)")
    bench("efficientnet_lite0_forward", "images/s", rate)

    bert = BertModel.from_pretrained(home / "models/minilm").eval()
    ids = torch.tensor([[1000 + ((b * 128 + i) * 7919) % 20000 for i in range(128)]
                        for b in range(16)])
    rate = timed(lambda: bert(input_ids=ids).last_hidden_state.sum().item()) * 16
    print(f"PyTorch {torch.__version__}: MiniLM-L6 {rate:.2f} sequences/s (16 x 128 tokens)")
    bench("minilm_forward", "sequences/s", rate)
