"""Score a model on the evaluation set, or sample n answers per training question (pass-rate curation).

    python eval/run_offline_inference.py --model Qwen/Qwen2.5-VL-3B-Instruct --dp_size 8 --output_dir runs/3b
    python eval/run_offline_inference.py --model M --dataset_name data/m23k --split train --preset pass_rate \
        --output_dir runs/pass_rate/m23k
    OPENAI_API_KEY=... python eval/run_offline_inference.py --backend api --model gpt-4o-2024-11-20 \
        --window 16 --output_dir runs/gpt-4o
    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python eval/run_offline_inference.py --ray --dp_size 32 --model M --output_dir /shared/runs/M

Every flag is a field of ``RunConfig`` (medvlthinker/inference/run_config.py), its help text declared there; --preset
sets the sampling flags to one of the paper's experiments (medvlthinker/inference/settings.py).

Output (docs/eval.md): shard-*.jsonl records appended as rows finish, eval_results.jsonl, accuracy.json,
args.json. Rerunning the same command resumes; --overwrite starts over.
"""

from __future__ import annotations

import json

import click

from medvlthinker import cli
from medvlthinker.cli import add_options, cli_options, preset_option
from medvlthinker.inference.run_config import RunConfig, parse_engine_kwargs
from medvlthinker.inference.runner import run
from medvlthinker.inference.settings import PRESETS, SAMPLING_FIELDS

PRESET, FROM_PRESET = preset_option(
    PRESETS, SAMPLING_FIELDS,
    help="the paper's sampling settings of an experiment (eval: the table; pass_rate: curation; metrics_at_n, "
         "pass_at_k: the sampling analyses); --temperature, --top_p, --max_tokens, --n or --seed given as well "
         "override it")


@cli.command(context_settings={"show_default": True})
@add_options([*cli_options(RunConfig, callbacks=FROM_PRESET), PRESET])
def main(subset, engine_kwargs, **kwargs):
    names = [s for item in subset for s in item.split(",") if s] or None
    table = run(RunConfig(subset=names, engine_kwargs=parse_engine_kwargs(engine_kwargs), **kwargs))
    if table is not None:
        click.echo(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
