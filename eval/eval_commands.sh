#!/usr/bin/env bash
# The published table (docs/protocol.md sections 5 and 10): every released model and base model on the six benchmarks,
# vLLM offline, bf16, the eval preset (greedy, 4096 tokens, seed 42: medvlthinker/inference/settings.py), three
# repeats, then the regrade.
# 3B/7B: one engine per GPU over 8 GPUs; 32B: tensor parallel 4, so 2 engines on 8 GPUs.
# Usage: bash eval/eval_commands.sh [OUT_ROOT]   (MODELS="a b" to run a subset; DP/TP/REPEATS override)
# The UCSC-VLAA checkpoint names below follow the paper's table rows; confirm them on the Hub before a run.
set -euo pipefail
OUT_ROOT=${1:-outputs/eval}
REPEATS=${REPEATS:-3}
DATASET=${DATASET:-UCSC-VLAA/MedVLThinker-Eval}
# The paper's table rows: each base model, then its MedVLThinker recipes (UCSC-VLAA/MedVLThinker-<size>-<recipe>).
RECIPES="SFT_m23k SFT_PMC SFT_m23k-RL_PMC RL_m23k RL_PMC RL_m23k-RL_PMC"
DEFAULT_MODELS=""
for size in 3B 7B 32B; do
  recipes=$RECIPES
  if [[ $size == 32B ]]; then recipes="RL_m23k"; fi  # the one released 32B model
  DEFAULT_MODELS+=" Qwen/Qwen2.5-VL-$size-Instruct"
  for recipe in $recipes; do DEFAULT_MODELS+=" UCSC-VLAA/MedVLThinker-$size-$recipe"; done
done
MODELS=${MODELS:-$DEFAULT_MODELS}
HERE=$(cd "$(dirname "$0")" && pwd)

for model in $MODELS; do
  if [[ $model == *32B* ]]; then tp=${TP:-4}; dp=${DP:-2}; else tp=${TP:-1}; dp=${DP:-8}; fi
  for repeat in $(seq 1 "$REPEATS"); do
    out="$OUT_ROOT/${model//\//__}/run$repeat"
    python "$HERE/run_offline_inference.py" --model "$model" --backend vllm \
      --dataset_name "$DATASET" --split test --dp_size "$dp" --tp_size "$tp" \
      --preset eval \
      --gpu_memory_utilization 0.9 --output_dir "$out"
    python "$HERE/regrade.py" "$out"
  done
done
