#!/usr/bin/env bash
# CALM at full scale on one machine with 8 NVIDIA GPUs: one process per GPU, started by
# Open MPI's mpirun; `--device cuda:auto` gives rank r the GPU of its local rank. The configs'
# `gradient_accumulation: 8` is then one micro-batch per rank per step: the paper's global
# batch (256 photos; 128 conversations). Run from the repository root:
#   scripts/launch/one_node_8gpus.sh            # pretraining, then fine-tuning
#   RESUME=1 scripts/launch/one_node_8gpus.sh   # continue both from their latest checkpoints
# Not yet run on GPUs (see README, "Many GPUs and machines"); fine-tuning Vicuna-7B with the
# whole LLM trained also needs issue #23's memory savings to fit in 80 GB.
set -euo pipefail
cd "$(dirname "$0")/../.."
GPUS="${GPUS:-8}"
PRETRAIN_RUN="${PRETRAIN_RUN:-runs/pretrain/calm_vitl14}"
FINETUNE_RUN="${FINETUNE_RUN:-runs/finetune/calm_vicuna7b}"
cargo build --release --features cuda,mpi --bin pretrain --bin finetune
launch() { mpirun -np "$GPUS" --bind-to none "$@"; }
if [ -n "${RESUME:-}" ] && [ -f "$PRETRAIN_RUN/run.json" ] && [ ! -f "$PRETRAIN_RUN/model.safetensors" ]; then
  launch target/release/pretrain --resume "$PRETRAIN_RUN" --device cuda:auto
elif [ ! -f "$PRETRAIN_RUN/model.safetensors" ]; then
  launch target/release/pretrain --config configs/pretrain/calm_vitl14.yaml \
    --device cuda:auto --output-dir "$PRETRAIN_RUN"
fi
if [ -n "${RESUME:-}" ] && [ -f "$FINETUNE_RUN/run.json" ]; then
  launch target/release/finetune --resume "$FINETUNE_RUN" --device cuda:auto
else
  launch target/release/finetune --config configs/finetune/calm_vicuna7b.yaml \
    --set "finetune.pretrained=$PRETRAIN_RUN" --device cuda:auto --output-dir "$FINETUNE_RUN"
fi
