#!/usr/bin/env bash
# The whole MedVLThinker pipeline in miniature, on CPU, with the same scripts a researcher runs on a cluster: a tiny
# Qwen2.5-VL and a bundled synthetic task it can learn in minutes (medvlthinker.demo.demo_task) stand in for the real
# model and data sets, so the paper's effects show: SFT teaches the answer format and the link from picture to option
# letter; GRPO trains on the questions the SFT model sometimes gets right.
#
#   synthetic task -> warm-start of the tiny random model on captions and text questions (the "base") -> SFT (TRL) on the image
#   questions -> merge -> pass-rate estimation of the SFT model (vLLM) -> curation (the paper's band: drop the
#   always-wrong and always-right, shuffled) -> verl parquet -> GRPO (verl on CPU) from the SFT model -> merge
#   -> eval of base, SFT and RL (vLLM) -> table, plots, reward curve, HTML report, summary
#
# `make demo` runs it. Knobs (environment): DEMO_OUT (outputs/demo), DEMO_BACKEND (vllm | hf), DEMO_SEED (0),
# DEMO_PASS_N (samples per training question; the paper uses 16), DEMO_ROWS_PER_BENCHMARK, DEMO_TRAIN_ROWS,
# DEMO_WARMUP_STEPS, DEMO_SFT_STEPS, DEMO_RL_STEPS (epochs over the RL questions, one step each), DEMO_RL_LR,
# DEMO_RL_BATCH (the RL questions, drawn from the curated band), DEMO_RL_ROLLOUTS (answers a question),
# DEMO_RL_MINI_BATCH (questions an actor update), DEMO_RL_PPO_EPOCHS, DEMO_MAX_TOKENS, DEMO_RELIANCE_MODELS (the models
# of the visual-reliance table: base sft rl).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-$ROOT/.venv/bin/python}
OUT=${DEMO_OUT:-outputs/demo}
BACKEND=${DEMO_BACKEND:-vllm}
SEED=${DEMO_SEED:-0}
PASS_N=${DEMO_PASS_N:-8}
ROWS_PER_BENCHMARK=${DEMO_ROWS_PER_BENCHMARK:-16}
TRAIN_ROWS=${DEMO_TRAIN_ROWS:-128}
config_value() { "$PY" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
WARMUP_STEPS=${DEMO_WARMUP_STEPS:-$(config_value configs/sft/demo_warmup.yaml max_steps)}
SFT_STEPS=${DEMO_SFT_STEPS:-$(config_value configs/sft/demo_sft.yaml max_steps)}
RL_STEPS=${DEMO_RL_STEPS:-6}
MAX_TOKENS=${DEMO_MAX_TOKENS:-48}
RL_LR=${DEMO_RL_LR:-5e-4}
RL_BATCH=${DEMO_RL_BATCH:-8}
RL_ROLLOUTS=${DEMO_RL_ROLLOUTS:-8}
RL_MINI_BATCH=${DEMO_RL_MINI_BATCH:-2}
RL_PPO_EPOCHS=${DEMO_RL_PPO_EPOCHS:-2}
RELIANCE_MODELS=${DEMO_RELIANCE_MODELS:-base sft rl}

# Offline, and vLLM's CPU build in-process with a small KV cache.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
export VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} RAY_USAGE_STATS_ENABLED=0
export PYTHON=$PY

start=$SECONDS
stage() { printf '\n=== [%3ds] %s\n' "$((SECONDS - start))" "$*"; }
ray_tmp=$(mktemp -d /tmp/ray.XXXXXX)  # Ray's socket paths must stay short
trap 'rm -rf "$ray_tmp"' EXIT

rm -rf "$OUT"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: verl resolves data paths from its own working directory

stage "1/11 tiny random Qwen2.5-VL (real tokenizer, random weights) and the synthetic task (seed $SEED)"
"$PY" -m medvlthinker.demo.tiny tiny "$OUT/model/random" --random_weights
"$PY" -m medvlthinker.demo.demo_task "$OUT/data" --rows_per_benchmark "$ROWS_PER_BENCHMARK" --train_rows "$TRAIN_ROWS" \
  --seed "$SEED"
"$PY" data_process/convert_sft_format.py "$OUT/data/train_pmc_vqa" "$OUT/data/sft/pmc_vqa"

stage "2/11 the base model: $WARMUP_STEPS warm-start steps of the random model on captions and text questions"
# A stand-in for pre-training: the base describes pictures and answers text questions in the format, and has never
# answered a question about a picture.
"$PY" train/sft/train_sft.py configs/sft/demo_warmup.yaml "model_name_or_path=$OUT/model/random" \
  "train_data=$OUT/data/warmup" "output_dir=$OUT/checkpoints/warmup" "max_steps=$WARMUP_STEPS" "seed=$SEED"
bash train/merge.sh sft "$OUT/checkpoints/warmup" "$OUT/model/random" "$OUT/model/base" --no_check

stage "3/11 SFT: $SFT_STEPS steps with TRL from the base on the image training questions"
"$PY" train/sft/train_sft.py configs/sft/demo_sft.yaml "model_name_or_path=$OUT/model/base" \
  "train_data=$OUT/data/sft/pmc_vqa" "output_dir=$OUT/checkpoints/sft" "max_steps=$SFT_STEPS" "seed=$SEED"

stage "4/11 merge the SFT checkpoint into a Hugging Face model directory (then load + generate check)"
bash train/merge.sh sft "$OUT/checkpoints/sft" "$OUT/model/base" "$OUT/model/sft"

stage "5/11 pass-rate estimation of the SFT model: $PASS_N samples per training question, temperature 1.0 ($BACKEND)"
"$PY" eval/run_offline_inference.py --model "$OUT/model/sft" --backend "$BACKEND" \
  --dataset_name "$OUT/data/train_pmc_vqa" --n "$PASS_N" --temperature 1.0 --top_p 1.0 \
  --max_tokens "$MAX_TOKENS" --seed "$SEED" --output_dir "$OUT/pass_rate/pmc_vqa"

stage "6/11 curation: attach pass_count, keep the band 1..$((PASS_N - 1))"
# Questions the policy always fails or always solves give GRPO no signal (every rollout of the group gets the
# same reward, so the advantages are zero): they are dropped, as the paper's band does. The rows are shuffled
# rather than ordered easy to hard, so that the reward curve shows learning, not the curriculum's rising difficulty.
# A band smaller than the RL_BATCH questions GRPO trains on stops here (--min_rows): lower DEMO_RL_BATCH or raise
# DEMO_TRAIN_ROWS.
"$PY" data_process/order_easy_to_hard.py --dataset_name "$OUT/data/train_pmc_vqa" \
  --results_jsonl_path "$OUT/pass_rate/pmc_vqa" --num_rollouts "$PASS_N" \
  --remove_pass_count_below 1 --remove_pass_count_above "$((PASS_N - 1))" --order_type random \
  --min_rows "$RL_BATCH" --save_to_disk_path "$OUT/data/curated_pmc_vqa"

stage "7/11 verl RL parquet of the curated set (and the PMC-VQA eval rows as its validation file)"
"$PY" data_process/convert_verl_format.py "$OUT/data/curated_pmc_vqa" "$OUT/data/verl/train.parquet"
"$PY" data_process/convert_verl_format.py "$OUT/data/eval" "$OUT/data/verl/val.parquet" --subset pmc_vqa --rl_split test

stage "8/11 RL: $RL_STEPS GRPO steps with verl from the SFT model, each an epoch over $RL_BATCH curated questions"
# verl starts Ray, an FSDP2 actor and reference and a vLLM-CPU rollout server (about two minutes). GRPO trains on
# RL_BATCH questions of the band (verl's data.train_max_samples), one epoch a step: each step samples RL_ROLLOUTS
# answers to each of them, scores them with the project's reward and goes RL_PPO_EPOCHS times over them in
# mini-batches of RL_MINI_BATCH questions, one actor update each (PPO's clip keeps the later updates near the
# sampling policy; one epoch, as the paper, is faster but its reward rises too little to see over a step's noise).
# The same questions every step make the reward curve a learning curve, not the spread of new questions'
# difficulty (docs/demo.md). The response_logits overlay has the actor and the reference compute log-probabilities
# at the answer's tokens only (the tiny model's step is mostly its 151,936-way LM head; same numbers, half the
# time). The console log goes to rl/train.log; its step lines are echoed here.
mkdir -p "$OUT/rl"
env -u VLLM_ENABLE_V1_MULTIPROCESSING RAY_TMPDIR="$ray_tmp" PREFLIGHT_ROWS=4 \
  bash train/rl/train.sh configs/rl/qwen2.5-vl-3b_rl_pmc.yaml configs/rl/overlays/cpu.yaml \
  configs/rl/overlays/response_logits.yaml \
  "actor_rollout_ref.model.path=$OUT/model/sft" \
  "data.train_files=[$OUT/data/verl/train.parquet]" "data.val_files=[$OUT/data/verl/val.parquet]" \
  "data.train_max_samples=$RL_BATCH" "data.train_batch_size=$RL_BATCH" \
  "data.max_response_length=$MAX_TOKENS" "data.seed=$SEED" \
  "actor_rollout_ref.rollout.n=$RL_ROLLOUTS" "actor_rollout_ref.actor.ppo_mini_batch_size=$RL_MINI_BATCH" \
  "actor_rollout_ref.actor.ppo_epochs=$RL_PPO_EPOCHS" \
  "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8" "actor_rollout_ref.actor.optim.lr=$RL_LR" \
  "trainer.total_epochs=$RL_STEPS" "trainer.total_training_steps=$RL_STEPS" "trainer.save_freq=$RL_STEPS" \
  "trainer.default_local_dir=$OUT/checkpoints/rl" 2>&1 \
  | tee "$OUT/rl/train.log" \
  | sed -nuE 's/.*step:([0-9]+) - .*critic\/score\/mean:(np\.float64\()?([0-9.e-]+).*/  RL step \1: mean reward \3/p'

stage "9/11 merge the RL actor (verl's FSDP shards) into a Hugging Face model directory"
bash train/merge.sh verl "$OUT/checkpoints/rl/global_step_$RL_STEPS/actor" "$OUT/model/rl"

stage "10/11 eval of the base, SFT and RL models on the six benchmarks, and with blank and shuffled images (greedy, $BACKEND)"
for model in base sft rl; do
  echo "--- $model"
  "$PY" eval/run_offline_inference.py --model "$OUT/model/$model" --backend "$BACKEND" \
    --dataset_name "$OUT/data/eval" --temperature 0.0 --top_p 1.0 --n 1 --seed 42 \
    --max_tokens "$MAX_TOKENS" --output_dir "$OUT/eval/$model/run1"
done
# Visual reliance (docs/experiments.md): the option questions with their own, blank and shuffled pictures, and
# text-only questions as the control, on the reliance set only (the yes/no benchmarks would add rows, not a finding).
reliance_runs=()
for model in $RELIANCE_MODELS; do
  for mode in as_is blank shuffled; do
    echo "--- $model, --image_mode $mode"
    "$PY" eval/run_offline_inference.py --model "$OUT/model/$model" --backend "$BACKEND" \
      --dataset_name "$OUT/data/reliance" --image_mode "$mode" --temperature 0.0 --top_p 1.0 --n 1 --seed 42 \
      --max_tokens "$MAX_TOKENS" --output_dir "$OUT/eval_reliance/$model/$mode"
    reliance_runs+=(--reliance_run "$model=$OUT/eval_reliance/$model/$mode")
  done
done

stage "11/11 table, plots, reward curve, HTML report and summary"
"$PY" analysis/make_report.py --run "base=$OUT/eval/base/run1" --run "sft=$OUT/eval/sft/run1" \
  --run "rl=$OUT/eval/rl/run1" --eval_data "$OUT/data/eval" \
  --pass_rate_dir "$OUT/pass_rate/pmc_vqa" --pass_rate_rollouts "$PASS_N" --sampling_run "sft=$OUT/pass_rate/pmc_vqa" \
  --rl_log "$OUT/rl/train.log" --paired sft base "${reliance_runs[@]}" \
  --title "MedVLThinker demo (tiny Qwen2.5-VL, synthetic task)" --output_dir "$OUT/report"

stage "done"
"$PY" -m medvlthinker.analysis.demo_summary "$OUT" --model base --model sft --model rl --pass_rollouts "$PASS_N" \
  --rl_log "$OUT/rl/train.log"
cat <<EOF

Outputs (under $OUT):
  data (unified schema)      $OUT/data/{eval,train_pmc_vqa,train_m23k,warmup}
  models                     $OUT/model/{random,base,sft,rl}
  pass-rate results          $OUT/pass_rate/pmc_vqa/eval_results.jsonl
  curated set + distribution $OUT/data/curated_pmc_vqa, $OUT/data/curated_pmc_vqa_curation/
  verl RL parquet, RL log    $OUT/data/verl/{train,val}.parquet, $OUT/rl/train.log
  eval records + accuracy    $OUT/eval/{base,sft,rl}/run1/{eval_results.jsonl,accuracy.json}
  visual-reliance runs       $OUT/eval_reliance/MODEL/{as_is,blank,shuffled}/, $OUT/report/tables/visual_reliance.md
  summary                    $OUT/summary.json
  table, plots, report       $OUT/report/ (open $OUT/report/report.html)
EOF
