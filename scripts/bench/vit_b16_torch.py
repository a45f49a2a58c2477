"""Images per second of HF transformers' CLIPVisionModel, ViT-B/16 at 224 px, random weights,
batch 8, every hidden state returned, on the CPU with as many threads as cores."""

import json
import os
import sys
import time

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

iters = int(sys.argv[1]) if len(sys.argv) > 1 else 5
torch.set_num_threads(os.cpu_count())
config = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                          num_attention_heads=12, image_size=224, patch_size=16,
                          hidden_act="quick_gelu")
model = CLIPVisionModel(config).eval()
x = torch.randn(8, 3, 224, 224)
with torch.inference_mode():
    model(pixel_values=x, output_hidden_states=True)
    start = time.perf_counter()
    for _ in range(iters):
        model(pixel_values=x, output_hidden_states=True).pooler_output.sum().item()
    secs = time.perf_counter() - start
print(f"PyTorch {torch.__version__} (cpu, {torch.get_num_threads()} threads): "
      f"{iters * 8 / secs:.2f} images/s ({iters} x 8 images in {secs:.2f} s)")
print("bench " + json.dumps({"workload": "vit_b16_forward", "unit": "images/s",
                             "value": iters * 8 / secs}))
