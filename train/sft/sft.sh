#!/usr/bin/env bash
# SFT with FSDP (docs/protocol.md section 9): train/sft/sft.sh CONFIG [key=value ...]
#
# One node x 8 GPUs (the paper's setting):
#   train/sft/sft.sh configs/sft/qwen2.5-vl-3b_sft_m23k.yaml
# Two nodes x 8 GPUs: run on every node with the same MAIN_PROCESS_IP and that node's MACHINE_RANK:
#   ACCELERATE_CONFIG=configs/accelerate/fsdp_2node_8gpu.yaml MAIN_PROCESS_IP=10.0.0.1 MACHINE_RANK=0 \
#     train/sft/sft.sh configs/sft/qwen2.5-vl-7b_sft_pmc_vqa.yaml
# The global batch stays 16: gradient accumulation is derived from the world size.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 CONFIG [key=value ...]" >&2
  exit 2
fi
CONFIG=$1
shift

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-$ROOT/configs/accelerate/fsdp_1node_8gpu.yaml}
PYTHON=${PYTHON:-python}

launch_args=(--config_file "$ACCELERATE_CONFIG")
if [[ -n "${MACHINE_RANK:-}" ]]; then
  launch_args+=(--machine_rank "$MACHINE_RANK")
fi
if [[ -n "${MAIN_PROCESS_IP:-}" ]]; then
  launch_args+=(--main_process_ip "$MAIN_PROCESS_IP")
fi
if [[ -n "${MAIN_PROCESS_PORT:-}" ]]; then
  launch_args+=(--main_process_port "$MAIN_PROCESS_PORT")
fi

# Fail on a bad config, model path, output directory or data set before any GPU process starts (the images are
# decoded by the main process of the run, before the model loads).
"$PYTHON" "$ROOT/train/sft/train_sft.py" "$CONFIG" "$@" --print_config --check > /dev/null

exec "$PYTHON" -m accelerate.commands.launch "${launch_args[@]}" "$ROOT/train/sft/train_sft.py" "$CONFIG" "$@"
