#!/usr/bin/env bash
# ViT-B/16 at 224 px: calm (Burn, flex backend, release build) and PyTorch, one after the
# other in one run. PYTHON is an interpreter with scripts/fixtures/requirements.txt installed.
#   PYTHON=.venv/bin/python scripts/bench/vit_b16.sh [iterations]
set -euo pipefail
cd "$(dirname "$0")/../.."
iters="${1:-5}"
lscpu | grep -m1 'Model name' || true
cargo run --quiet --release --example vit_b16 -- cpu "$iters"
"${PYTHON:-python3}" scripts/bench/vit_b16_torch.py "$iters"
