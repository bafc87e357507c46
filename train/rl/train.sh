#!/usr/bin/env bash
# GRPO with verl on one node (or on a Ray cluster when RAY_ADDRESS is set; docs/rl.md):
#
#   bash train/rl/train.sh configs/rl/qwen2.5-vl-3b_rl_m23k.yaml [hydra overrides...]
#
# It runs the CPU preflight first (skip with SKIP_PREFLIGHT=1), then verl's main_ppo through
# medvlthinker.compat.verl_position_ids, which installs the 3-D position-id fix in this driver process; the config
# installs it in every Ray worker (ray_kwargs.ray_init.runtime_env.worker_process_setup_hook).
set -euo pipefail

if [[ $# -lt 1 || ! -f "$1" ]]; then
    echo "usage: $0 CONFIG.yaml [hydra overrides...]   (CONFIG: one of configs/rl/*.yaml)" >&2
    exit 2
fi
CONFIG=$(realpath "$1")
shift
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-python}
cd "$ROOT"

export TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-true}
export VLLM_USE_V1=${VLLM_USE_V1:-1}

if [[ "${SKIP_PREFLIGHT:-0}" != "1" ]]; then
    "$PYTHON" train/rl/preflight.py "$CONFIG" "$@" --sample-rows "${PREFLIGHT_ROWS:-64}"
fi

exec "$PYTHON" -m medvlthinker.compat.verl_position_ids \
    --config-path="$(dirname "$CONFIG")" --config-name="$(basename "$CONFIG" .yaml)" "$@"
