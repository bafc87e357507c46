#!/usr/bin/env bash
# The comparison rows of the published table (docs/reproduction.md): the API models and the baseline models with
# their own prompts, on the six benchmarks, with the eval preset (greedy, 4096 tokens, seed 42), then the regrade.
# - API (need OPENAI_API_KEY; OPENAI_BASE_URL or API_BASE for another endpoint): GPT-4o and GPT-4o-mini, the user
#   text of the Qwen rows, one run each (the original ran them once).
# - Baselines (GPUs; vLLM offline, three repeats): LLaVA-Med and HuatuoGPT-Vision with the step-by-step instruction
#   (LLaVA-Med graded with the llava-med rule), Gemma 3 and MedGemma with the gemma3 prompt. MedGemma 4B has no
#   command in the original; google/medgemma-4b-it with the gemma3 prompt is the natural one.
# Usage: bash eval/eval_baselines.sh [OUT_ROOT]   (MODELS="a b" to run a subset; REPEATS/DP/TP/WINDOW override)
set -euo pipefail
OUT_ROOT=${1:-outputs/eval_baselines}
REPEATS=${REPEATS:-3}
DATASET=${DATASET:-UCSC-VLAA/MedVLThinker-Eval}
# the original's Azure deployments gpt-4o-1120 and gpt-4o-mini (2024-07-18)
API_MODELS="gpt-4o-2024-11-20 gpt-4o-mini-2024-07-18"
DEFAULT_MODELS="
gpt-4o-2024-11-20
gpt-4o-mini-2024-07-18
Eren-Senoglu/llava-med-v1.5-mistral-7b-hf
FreedomIntelligence/HuatuoGPT-Vision-7B-Qwen2.5VL
FreedomIntelligence/HuatuoGPT-Vision-34B-hf
google/gemma-3-4b-it
google/gemma-3-27b-it
google/medgemma-4b-it
google/medgemma-27b-it
"
MODELS=${MODELS:-$DEFAULT_MODELS}
HERE=$(cd "$(dirname "$0")" && pwd)
SAMPLING=(--preset eval)

for model in $MODELS; do
  grade=()
  case $model in
    gpt-4o*)
      # one run; --window concurrent requests (raise it as the account's rate limit allows)
      run=(--backend api --window "${WINDOW:-16}" ${API_BASE:+--api_base "$API_BASE"}); repeats=1 ;;
    *llava-med*)
      run=(--prompt_mode raw_image_tokens --instruction_prompt step_by_step --llava_med_rule)
      grade=(--llava_med_rule); repeats=$REPEATS ;;
    *HuatuoGPT-Vision-7B-Qwen2.5VL)
      # a Qwen2.5-VL model: its image placeholders come from the chat template, the instruction is the baseline one
      run=(--instruction_prompt step_by_step); repeats=$REPEATS ;;
    *HuatuoGPT-Vision-34B-hf)
      run=(--prompt_mode raw_image_tokens --instruction_prompt step_by_step); repeats=$REPEATS ;;
    google/gemma-3-*|google/medgemma-*)
      run=(--prompt_mode gemma3); repeats=$REPEATS ;;
    *)
      echo "eval_baselines.sh: no settings for $model; fix: use eval/eval_commands.sh for the Qwen rows" >&2; exit 1 ;;
  esac
  if [[ " $API_MODELS " != *" $model "* ]]; then
    if [[ $model == *27b* || $model == *34B* ]]; then tp=${TP:-4}; dp=${DP:-2}; else tp=${TP:-1}; dp=${DP:-8}; fi
    run+=(--backend vllm --dp_size "$dp" --tp_size "$tp" --gpu_memory_utilization 0.9)
  fi
  for repeat in $(seq 1 "$repeats"); do
    out="$OUT_ROOT/${model//\//__}/run$repeat"
    python "$HERE/run_offline_inference.py" --model "$model" --dataset_name "$DATASET" --split test \
      "${SAMPLING[@]}" "${run[@]}" --output_dir "$out"
    python "$HERE/regrade.py" "$out" ${grade[@]+"${grade[@]}"}
  done
done
