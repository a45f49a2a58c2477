#!/usr/bin/env bash
# CALM at full scale on two machines with 8 NVIDIA GPUs each, started with Open MPI from the
# first machine. Both need the same repository path, the same build, the data, the weights
# and the run directories on a shared file system (rank 0 writes the run; every rank reads
# its config, split and checkpoints). HOSTS is an Open MPI hostfile, e.g.
#   node-a slots=8
#   node-b slots=8
# 16 ranks cannot split the configs' 8 micro-batches per step, so each rank takes one
# micro-batch of half the size: 16 x 16 photos (16 x 8 conversations), the same global batch.
#   HOSTS=hosts.txt scripts/launch/two_nodes.sh
#   HOSTS=hosts.txt RESUME=1 scripts/launch/two_nodes.sh   # continue from the latest checkpoints
# Not yet run on GPUs or across machines (see README, "Many GPUs and machines").
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${HOSTS:?set HOSTS to an Open MPI hostfile with two nodes of 8 slots}"
PRETRAIN_RUN="${PRETRAIN_RUN:-runs/pretrain/calm_vitl14}"
FINETUNE_RUN="${FINETUNE_RUN:-runs/finetune/calm_vicuna7b}"
cargo build --release --features cuda,mpi --bin pretrain --bin finetune
# -x passes the environment the ranks on the other machine need.
launch() {
  mpirun -np 16 --hostfile "$HOSTS" --map-by ppr:8:node --bind-to none \
    -x PATH -x LD_LIBRARY_PATH ${CALM_HOME:+-x CALM_HOME} "$@"
}
if [ -n "${RESUME:-}" ] && [ -f "$PRETRAIN_RUN/run.json" ]; then
  [ -f "$PRETRAIN_RUN/model.safetensors" ] ||
    launch target/release/pretrain --resume "$PRETRAIN_RUN" --device cuda:auto
else
  launch target/release/pretrain --config configs/pretrain/calm_vitl14.yaml \
    --set data.loader.batch_size=16 --set pretrain.gradient_accumulation=16 \
    --device cuda:auto --output-dir "$PRETRAIN_RUN"
fi
if [ -n "${RESUME:-}" ] && [ -f "$FINETUNE_RUN/run.json" ]; then
  launch target/release/finetune --resume "$FINETUNE_RUN" --device cuda:auto
else
  launch target/release/finetune --config configs/finetune/calm_vicuna7b.yaml \
    --set finetune.batch_size=8 --set finetune.gradient_accumulation=16 \
    --set "finetune.pretrained=$PRETRAIN_RUN" --device cuda:auto --output-dir "$FINETUNE_RUN"
fi
