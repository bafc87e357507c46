#!/usr/bin/env bash
# GRPO with verl on one node (or on a Ray cluster when RAY_ADDRESS is set; docs/rl.md):
#
#   bash train/rl/train.sh configs/rl/qwen2.5-vl-3b_rl_m23k.yaml [overlay.yaml ...] [hydra overrides...]
#   bash train/rl/train.sh configs/rl/qwen2.5-vl-3b_rl_pmc.yaml configs/rl/overlays/cpu.yaml \
#       actor_rollout_ref.model.path=... data.train_files=[...] data.val_files=[...]     # verl on a CPU
#
# It runs the CPU preflight first (skip with SKIP_PREFLIGHT=1), then verl's main_ppo through
# medvlthinker.train.rl, which merges the overlays, exports the config's Ray env_vars into the driver and installs
# the 3-D position-id fix there; the config installs it in every Ray worker, and the project's verl plugin
# installs the CPU profile's work-arounds wherever VERL_PLATFORM=cpu.
set -euo pipefail

if [[ $# -lt 1 || ! -f "$1" ]]; then
    echo "usage: $0 CONFIG.yaml [OVERLAY.yaml ...] [hydra overrides...]   (CONFIG: one of configs/rl/*.yaml)" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-python}
# config and overlay files as absolute paths: the run starts in the repository root, where the configs' relative
# data and checkpoint paths point
args=()
for arg in "$@"; do
    if [[ "$arg" != *=* && -f "$arg" ]]; then arg=$(realpath "$arg"); fi
    args+=("$arg")
done
set -- "${args[@]}"
cd "$ROOT"

export TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-true}
export VLLM_USE_V1=${VLLM_USE_V1:-1}

if [[ "${SKIP_PREFLIGHT:-0}" != "1" ]]; then
    "$PYTHON" train/rl/preflight.py "$@" --sample_rows "${PREFLIGHT_ROWS:-64}"
fi

exec "$PYTHON" -m medvlthinker.train.rl "$@"
