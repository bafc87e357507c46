#!/usr/bin/env bash
# Pass-rate curation samples (docs/protocol.md section 6): Qwen2.5-VL-3B-Instruct answers every training question
# with the pass_rate preset (16 samples at temperature 1.0: medvlthinker/inference/settings.py) and the eval prompt;
# num_correct of each record (strict grading) is the question's pass_count. The 7B and 32B runs reuse these
# 3B-filtered sets.
# Usage: bash eval/estimate_pass_rate.sh [OUT_ROOT]   (M23K / PMC point at local copies; DP=8 by default)
# On a Ray cluster (DP engines over all its nodes, one shared row queue):
#   ray job submit --working-dir . -- env RAY=1 DP=32 bash eval/estimate_pass_rate.sh /shared/outputs/pass_rate
set -euo pipefail
OUT_ROOT=${1:-outputs/pass_rate}
MODEL=${MODEL:-Qwen/Qwen2.5-VL-3B-Instruct}
M23K=${M23K:-UCSC-VLAA/MedVLThinker-m23k-tokenized}
PMC=${PMC:-UCSC-VLAA/MedVLThinker-pmc_vqa}
DP=${DP:-8}
RAY_FLAG=${RAY:+--ray}
HERE=$(cd "$(dirname "$0")" && pwd)

for pair in "m23k=$M23K" "pmc_vqa=$PMC"; do
  name=${pair%%=*}; data=${pair#*=}
  python "$HERE/run_offline_inference.py" --model "$MODEL" --backend vllm \
    --dataset_name "$data" --split train --dp_size "$DP" $RAY_FLAG \
    --preset pass_rate \
    --gpu_memory_utilization 0.9 --output_dir "$OUT_ROOT/$name"
done
