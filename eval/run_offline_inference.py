"""Score a model on the evaluation set, or sample n answers per training question (pass-rate curation).

    python eval/run_offline_inference.py --model Qwen/Qwen2.5-VL-3B-Instruct --dp_size 8 --output_dir runs/3b
    python eval/run_offline_inference.py --model M --dataset_name data/m23k --split train --n 16 \
        --temperature 1.0 --output_dir runs/pass_rate/m23k
    OPENAI_API_KEY=... python eval/run_offline_inference.py --backend api --model gpt-4o-2024-11-20 \
        --window 16 --output_dir runs/gpt-4o
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python eval/run_offline_inference.py --ray --dp_size 32 --model M --output_dir /shared/runs/M

Output (docs/eval.md): shard-*.jsonl records appended as rows finish, eval_results.jsonl, accuracy.json,
args.json. Rerunning the same command resumes; --overwrite starts over.
"""

from __future__ import annotations

import json

import click

from medvlthinker import cli
from medvlthinker.inference.backends import BACKENDS
from medvlthinker.inference.runner import DEFAULT_EVAL_DATASET, RunConfig, run
from medvlthinker.inference.settings import SamplingSettings
from medvlthinker.prompts import INSTRUCTION_PROMPTS, PROMPT_MODES
from medvlthinker.tiny import MAX_PIXELS, MIN_PIXELS


@cli.command(context_settings={"show_default": True})
@click.option("--model", required=True, help="model directory or Hugging Face name")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="vllm",
              help="vLLM offline (the paper), transformers generate (models vLLM lacks), or an OpenAI-compatible "
                   "API (--api_base; the key from --api_key_env)")
@click.option("--dp_size", type=int, default=1,
              help="data-parallel engines, one per GPU slice: on this node, or on the whole cluster with --ray")
@click.option("--tp_size", type=int, default=1, help="tensor-parallel GPUs per engine (32B: 4)")
@click.option("--node_size", type=int, default=1, help="nodes sharing the run")
@click.option("--node_rank", type=int, default=0, help="this node's rank")
@click.option("--temperature", type=float, default=SamplingSettings.temperature, help="0 = greedy (the table); 1.0 for pass rates")
@click.option("--top_p", type=float, default=SamplingSettings.top_p)
@click.option("--max_tokens", type=int, default=SamplingSettings.max_tokens)
@click.option("--n", type=int, default=SamplingSettings.n, help="rollouts per row (16 for pass rates)")
@click.option("--seed", type=int, default=SamplingSettings.seed)
@click.option("--dataset_name", default=DEFAULT_EVAL_DATASET,
              help="Hugging Face name or local path (save_to_disk dir, .parquet, .jsonl)")
@click.option("--split", default="test")
@click.option("--subset", multiple=True, help="keep these dataset_name values (repeat or comma-separate)")
@click.option("--dataset_size", type=int, default=None, help="keep the first N rows")
@click.option("--output_dir", required=True, type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="delete this run's previous records instead of resuming")
@click.option("--ignore_image", is_flag=True, help="text-only ablation: drop the images")
@click.option("--gpu_memory_utilization", type=float, default=0.9)
@click.option("--max_model_len", type=int, default=None)
@click.option("--limit_mm_per_prompt", type=int, default=None,
              help="images per prompt the engine reserves for (default: the most any row has)")
@click.option("--min_pixels", type=int, default=MIN_PIXELS)
@click.option("--max_pixels", type=int, default=MAX_PIXELS)
@click.option("--chat_template", type=click.Path(exists=True, dir_okay=False), default=None,
              help="a .jinja chat template replacing the processor's")
@click.option("--prompt_mode", type=click.Choice(PROMPT_MODES), default="qwen_chat",
              help="qwen_chat: the chat template (the paper); raw_image_tokens: '<image>\\n' per image + user text; "
                   "gemma3: Gemma 3 / MedGemma turn markers; the last two without qwen-vl-utils resizing")
@click.option("--instruction_prompt", default=None,
              help=f"the instruction: a name ({', '.join(INSTRUCTION_PROMPTS)}; step_by_step for LLaVA-Med and "
                   "HuatuoGPT-Vision) or the text (default: the paper's)")
@click.option("--api_base", default=None, help="api backend: endpoint URL (default: OPENAI_BASE_URL, else OpenAI)")
@click.option("--api_key_env", default="OPENAI_API_KEY",
              help="api backend: the environment variable holding the key (the key is never written)")
@click.option("--batch_size", type=int, default=8, help="prompts per generate call (hf backend)")
@click.option("--llava_med_rule", is_flag=True, help="also accept the answer text as a substring")
@click.option("--dtype", default=None, help="default: bfloat16 on GPU, float32 on CPU")
@click.option("--engine_kwargs", default="{}",
              help="extra vLLM engine arguments as JSON; for the api backend max_retries, backoff, max_backoff, "
                   "timeout")
@click.option("--window", type=int, default=None,
              help="requests in flight per engine (default: the engine's batch capacity, vLLM max_num_seqs / n "
                   "x 1.25; hf: --batch_size; api: 8 concurrent requests); memory grows with it, not with the rows")
@click.option("--ray", is_flag=True, help="run the engines as a Ray actor pool sharing one row queue (multi-node)")
@click.option("--ray_address", default=None,
              help="Ray cluster to join (default: RAY_ADDRESS, as set by ray job submit; else a local cluster)")
def main(subset, engine_kwargs, **kwargs):
    names = [s for item in subset for s in item.split(",") if s] or None
    table = run(RunConfig(subset=names, engine_kwargs=json.loads(engine_kwargs), **kwargs))
    if table is not None:
        click.echo(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
