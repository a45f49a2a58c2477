#!/usr/bin/env bash
# SmolLM2-135M-Instruct in f32: calm (Burn, flex backend, release build) and PyTorch on the
# same dequantised GGUF weights, one after the other in one run. PYTHON is an interpreter
# with scripts/fixtures/requirements.txt installed; the model comes from
# scripts/fetch_models.sh smollm2.
#   PYTHON=.venv/bin/python scripts/bench/smollm2.sh [prompt tokens] [new tokens] [repeats]
set -euo pipefail
cd "$(dirname "$0")/../.."
args=("${1:-128}" "${2:-64}" "${3:-3}")
lscpu | grep -m1 'Model name' || true
cargo run --quiet --release --example smollm2_bench -- "${args[@]}"
"${PYTHON:-python3}" scripts/bench/smollm2_torch.py "${args[@]}"
