#!/usr/bin/env bash
# Merge a training checkpoint into a Hugging Face model directory, then check that it loads and generates.
#
# verl GRPO (FSDP shards, merged by verl's model merger):
#   train/merge.sh verl checkpoints/rl/qwen2.5-vl-3b_rl_m23k/global_step_320/actor merged/3b_rl_m23k
# SFT (trained weights + the base model's config, tokenizer, processor and chat template):
#   train/merge.sh sft checkpoints/sft/qwen2.5-vl-3b_sft_m23k/checkpoint-3 Qwen/Qwen2.5-VL-3B-Instruct merged/3b_sft_m23k
set -euo pipefail
if [[ $# -lt 1 || ( "$1" != verl && "$1" != sft ) ]]; then
  echo "usage: $0 verl ACTOR_DIR TARGET_DIR [--overwrite] [--no_check] | $0 sft CHECKPOINT_DIR BASE_MODEL TARGET_DIR [--overwrite] [--no_check]" >&2
  exit 2
fi
exec "${PYTHON:-python}" -m medvlthinker.train.merge "$@"
