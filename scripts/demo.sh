#!/usr/bin/env bash
# The whole MedVLThinker pipeline on the embedded default, on CPU, with the same scripts a researcher runs on a
# cluster: a tiny random Qwen2.5-VL and bundled synthetic data stand in for the real model and data sets.
#
#   synthetic data -> pass-rate estimation (vLLM) -> curation -> verl parquet + SFT data -> RL preflight
#   -> a few SFT steps -> merge -> eval of the base and the SFT model (vLLM) -> table, plots, HTML report
#
# `make demo` runs it. Knobs (environment): DEMO_OUT (outputs/demo), DEMO_BACKEND (vllm | hf), DEMO_PASS_N
# (samples per training question; the paper uses 16), DEMO_ROWS_PER_BENCHMARK, DEMO_TRAIN_ROWS, DEMO_SFT_STEPS.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-$ROOT/.venv/bin/python}
OUT=${DEMO_OUT:-outputs/demo}
BACKEND=${DEMO_BACKEND:-vllm}
PASS_N=${DEMO_PASS_N:-4}
ROWS_PER_BENCHMARK=${DEMO_ROWS_PER_BENCHMARK:-8}
TRAIN_ROWS=${DEMO_TRAIN_ROWS:-24}
SFT_STEPS=${DEMO_SFT_STEPS:-4}
MAX_TOKENS=${DEMO_MAX_TOKENS:-48}

# Offline, and vLLM's CPU build in-process with a small KV cache.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
export VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} RAY_USAGE_STATS_ENABLED=0
export PYTHON=$PY

start=$SECONDS
stage() { printf '\n=== [%3ds] %s\n' "$((SECONDS - start))" "$*"; }

rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: verl resolves data paths from its own working directory

stage "1/10 tiny random Qwen2.5-VL (real tokenizer, random weights) and synthetic data"
"$PY" -m medvlthinker.tiny tiny "$OUT/model/base" --random-weights
"$PY" -m medvlthinker.synthetic "$OUT/data" --rows-per-benchmark "$ROWS_PER_BENCHMARK" --train-rows "$TRAIN_ROWS"

stage "2/10 pass-rate estimation: $PASS_N samples per training question, temperature 1.0 ($BACKEND)"
"$PY" eval/run_offline_inference.py --model "$OUT/model/base" --backend "$BACKEND" \
  --dataset_name "$OUT/data/train_pmc_vqa" --n "$PASS_N" --temperature 1.0 --top_p 1.0 \
  --max_tokens "$MAX_TOKENS" --seed 42 --output_dir "$OUT/pass_rate/pmc_vqa"

stage "3/10 curation: attach pass_count, order easy to hard"
# A random model almost never answers correctly, so the paper's band [1, 7] would keep nothing here: the demo keeps
# every pass count and still orders easy to hard. On real data use the defaults (--remove_pass_count_below 1
# --remove_pass_count_above 7).
"$PY" data_process/order_easy_to_hard.py --dataset_name "$OUT/data/train_pmc_vqa" \
  --results_jsonl_path "$OUT/pass_rate/pmc_vqa" --num_rollouts "$PASS_N" \
  --remove_pass_count_below 0 --remove_pass_count_above "$PASS_N" --order_type easy_to_hard \
  --save_to_disk_path "$OUT/data/curated_pmc_vqa"

stage "4/10 verl RL parquet and SFT conversations"
"$PY" data_process/convert_verl_format.py "$OUT/data/curated_pmc_vqa" "$OUT/data/verl/train.parquet"
"$PY" data_process/convert_verl_format.py "$OUT/data/eval" "$OUT/data/verl/val.parquet" --subset pmc_vqa --rl-split test
"$PY" data_process/convert_sft_format.py "$OUT/data/curated_pmc_vqa" "$OUT/data/sft/pmc_vqa"

stage "5/10 RL preflight of the paper's curriculum config (verl compose + validate, RLHFDataset, reward)"
"$PY" train/rl/preflight.py configs/rl/qwen2.5-vl-3b_rl_pmc_easy_to_hard.yaml \
  "actor_rollout_ref.model.path=$OUT/model/base" \
  "data.train_files=[$OUT/data/verl/train.parquet]" "data.val_files=[$OUT/data/verl/val.parquet]" \
  --sample-rows 4

stage "6/10 SFT: $SFT_STEPS steps with TRL on the curated image-text set"
"$PY" train/sft/train_sft.py configs/sft/tiny_cpu.yaml "model_name_or_path=$OUT/model/base" \
  "train_data=$OUT/data/sft/pmc_vqa" "output_dir=$OUT/checkpoints/sft" "max_steps=$SFT_STEPS"

stage "7/10 merge the SFT checkpoint into a Hugging Face model directory (then load + generate check)"
bash train/merge.sh sft "$OUT/checkpoints/sft" "$OUT/model/base" "$OUT/model/sft"

for model in base sft; do
  stage "$([ $model = base ] && echo 8 || echo 9)/10 eval of the $model model on the six benchmarks (greedy, $BACKEND)"
  "$PY" eval/run_offline_inference.py --model "$OUT/model/$model" --backend "$BACKEND" \
    --dataset_name "$OUT/data/eval" --temperature 0.0 --top_p 1.0 --n 1 --seed 42 \
    --max_tokens "$MAX_TOKENS" --output_dir "$OUT/eval/$model/run1"
done

stage "10/10 table, plots and HTML report"
"$PY" analysis/make_report.py --run "base=$OUT/eval/base/run1" --run "sft=$OUT/eval/sft/run1" \
  --eval-data "$OUT/data/eval" --pass-rate-dir "$OUT/pass_rate/pmc_vqa" --pass-rate-rollouts "$PASS_N" \
  --sampling-run "base=$OUT/pass_rate/pmc_vqa" \
  --paired base sft --title "MedVLThinker demo (tiny random model, synthetic data)" --output-dir "$OUT/report"

stage "done"
cat <<EOF
Outputs (under $OUT):
  data (unified schema)      $OUT/data/{eval,train_pmc_vqa,train_m23k}
  pass-rate results          $OUT/pass_rate/pmc_vqa/eval_results.jsonl
  curated set + distribution $OUT/data/curated_pmc_vqa, $OUT/data/curated_pmc_vqa_curation/
  verl RL parquet            $OUT/data/verl/{train,val}.parquet
  SFT data / checkpoint      $OUT/data/sft/pmc_vqa, $OUT/checkpoints/sft
  merged SFT model           $OUT/model/sft
  eval records + accuracy    $OUT/eval/{base,sft}/run1/{eval_results.jsonl,accuracy.json}
  table, plots, report       $OUT/report/ (open $OUT/report/report.html)
The model is random, so the accuracies are chance-level: the demo shows the pipeline, not the paper's numbers.
EOF
