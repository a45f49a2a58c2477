#!/usr/bin/env bash
# Step time of the tiny data-parallel config (configs/pretrain/tiny_data_parallel.yaml: four
# micro-batches of two photos per step) with one process and with `mpirun -np 2`, on this
# machine's CPU; `repeats` runs of each, reported as mean and sample standard deviation.
#   scripts/bench/data_parallel.sh [repeats]      (FEATURES=wgpu,mpi to reuse a wgpu build)
# Needs Open MPI (Debian: openmpi-bin libopenmpi-dev libclang-dev). Run it with nothing else
# running: on a 2-core machine a concurrent build halves the figures.
set -euo pipefail
cd "$(dirname "$0")/../.."
repeats="${1:-3}"
features="${FEATURES:-mpi}"
cargo build --quiet --release --features "$features" --bin pretrain
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
lscpu | grep -m1 'Model name' || true
for ranks in 1 2; do
  for i in $(seq "$repeats"); do
    run="$out/r$ranks-$i"
    if [ "$ranks" = 1 ]; then
      target/release/pretrain --config configs/pretrain/tiny_data_parallel.yaml --output-dir "$run" >/dev/null 2>&1
    else
      mpirun --allow-run-as-root --oversubscribe -np "$ranks" target/release/pretrain \
        --config configs/pretrain/tiny_data_parallel.yaml --output-dir "$run" >/dev/null 2>&1
    fi
  done
done
python3 - "$out" "$repeats" <<'PY'
import json, statistics, sys
out, repeats = sys.argv[1], int(sys.argv[2])
for ranks in (1, 2):
    ms, ips = [], []
    for i in range(1, repeats + 1):
        s = json.load(open(f"{out}/r{ranks}-{i}/summary.json"))
        ms.append(1000 * s["train_seconds"] / s["steps"])
        ips.append(s["images_seen"] / s["train_seconds"])
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
    print(f"{ranks} process{'es' if ranks > 1 else ''}: {statistics.mean(ms):.1f} ms/step "
          f"(sd {sd(ms):.1f}, {repeats} runs), {statistics.mean(ips):.1f} images/s")
PY
