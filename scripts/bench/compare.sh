#!/usr/bin/env bash
# calm against PyTorch and llama.cpp, side by side in one run on this machine (issue #24): one
# line per workload with both figures and their ratio (above 1: calm is faster), or with
# --json one JSON array. Builds calm's bench examples, and the reference environment in
# target/bench-venv from scripts/bench/requirements.txt unless PYTHON names an interpreter
# that has it. The model comes from scripts/fetch_models.sh smollm2. Run it with nothing else
# running.
#   scripts/bench/compare.sh [--json] [--quick] [--only transformer vit encoders smollm2]
set -euo pipefail
cd "$(dirname "$0")/../.."
# With the jobs' and the tests' features (README), so that Burn is compiled once.
cargo build --quiet --release --features wgpu --example backend_step --example vit_b16 --example encoders_bench \
  --example smollm2_bench
if [ -z "${PYTHON:-}" ]; then
  venv=target/bench-venv
  if [ ! -x "$venv/bin/python" ] || ! cmp -s scripts/bench/requirements.txt "$venv/requirements.txt"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -r scripts/bench/requirements.txt >&2
    cp scripts/bench/requirements.txt "$venv/requirements.txt"
  fi
  PYTHON="$venv/bin/python"
fi
exec "$PYTHON" scripts/bench/compare.py --python "$PYTHON" "$@"
